//! postcanary: a synthetic end-to-end delivery prober for public mail and
//! form channels. See ARCHITECTURE.md for the map.

pub mod blindlog;
pub mod bounce;
pub mod cli;
pub mod compliance;
pub mod config;
pub mod demo;
pub mod discover;
pub mod discover_watch;
pub mod dkim;
pub mod drift;
pub mod engine;
pub mod ha;
pub mod heartbeat;
pub mod inbox;
pub mod incident;
pub mod inspect;
pub mod ledger;
pub mod mailpath;
pub mod notify;
pub mod outbox;
pub mod page;
pub mod probe;
pub mod report;
pub mod retain;
pub mod retention;
pub mod sandbox;
pub mod sender;
pub mod server;
pub mod telemetry;
pub mod token;
pub mod verdict;
