//! Configuration: the main TOML file plus the files its `include` globs pull
//! in, parsed strictly (unknown keys are errors), validated, with every secret
//! reference resolved. The result is a [`Config`] in which every reference
//! (a channel's sender and inbox) is known to exist.

pub mod ca;
mod channel;
pub mod form;
mod inbox;
pub mod ledger;
mod loader;
mod login;
mod notify;
mod ops;
mod retain;
mod schema;
mod sender;
mod service;
mod source;
mod step_list;
mod template;
pub mod values;
mod vantage;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::verdict::Expect;
pub use channel::*;
pub use inbox::*;
pub use ledger::{LedgerBackend, LedgerConfig};
pub use loader::*;
pub use notify::*;
pub use ops::*;
pub use retain::{fill, HeaderValue, HttpExpect, Retain, RetainHttp, RetainPlace};
pub use schema::config_schema;
use schema::{RawInclude, RawMain};
pub use sender::*;
pub use service::*;
pub use source::{ConfigError, ConfigErrors, SourceFile};
pub use values::{AfterConfirm, HumanDuration, Schedule, Secret, SecretRef, Tls};
pub use vantage::{valid_vantage_name, VantageConfig};

/// The loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The main config file.
    pub path: PathBuf,
    pub ledger: LedgerConfig,
    pub token: TokenConfig,
    pub senders: Vec<SenderConfig>,
    pub inboxes: Vec<InboxConfig>,
    pub channels: Vec<Channel>,
    pub logins: Vec<form::LoginConfig>,
    pub notifiers: Vec<NotifierConfig>,
    pub paging: PagingConfig,
    pub silences: Vec<Silence>,
    pub heartbeat: Option<HeartbeatConfig>,
    /// The HTTP server of `run` (status page, API, metrics); none if absent.
    pub server: Option<ServerConfig>,
    pub telemetry: Option<TelemetryConfig>,
    /// DNS drift watching (`[dns]`); off without the table.
    pub dns: Option<DnsConfig>,
    /// Channel discovery in the daemon (`[discover]`); off without the table.
    pub discover: Option<DiscoverConfig>,
    /// What `/metrics` breaks its series down by (`[metrics]`).
    pub metrics: metrics::MetricsConfig,
    /// `channels` by id, built at the first [`Config::channel`] call.
    pub channel_index: ChannelIndex,
    /// This instance's vantage point and the quorum (`[vantage]`); none: one vantage, as before.
    pub vantage: Option<VantageConfig>,
}

/// Channel id → position in `Config::channels`: the incident processor asks
/// once per verdict, and a walk through 50,000 channels (each a few hundred
/// bytes) costs more than the rest of the verdict.
#[derive(Debug, Clone, Default)]
pub struct ChannelIndex(std::sync::OnceLock<std::collections::HashMap<String, usize>>);

/// `[metrics]`.
pub mod metrics;

impl Config {
    pub fn notifier(&self, name: &str) -> Option<&NotifierConfig> {
        self.notifiers.iter().find(|n| n.name == name)
    }
    pub fn sender(&self, name: &str) -> Option<&SenderConfig> {
        self.senders.iter().find(|s| s.name == name)
    }
    pub fn inbox(&self, name: &str) -> Option<&InboxConfig> {
        self.inboxes.iter().find(|i| i.name == name)
    }
    pub fn login(&self, name: &str) -> Option<&form::LoginConfig> {
        self.logins.iter().find(|l| l.name == name)
    }
    pub fn channel(&self, id: &str) -> Option<&Channel> {
        let index = self.channel_index.0.get_or_init(|| {
            self.channels
                .iter()
                .enumerate()
                .map(|(i, c)| (c.id.clone(), i))
                .collect()
        });
        match index.get(id).and_then(|&i| self.channels.get(i)) {
            Some(c) if c.id == id => Some(c),
            None if index.len() == self.channels.len() => None,
            // Channels changed after the index was built (no loaded config
            // does that): the walk is still right.
            _ => self.channels.iter().find(|c| c.id == id),
        }
    }
}

/// The config file to use: the explicit one, else `$POSTCANARY_CONFIG`, else `./postcanary.toml`.
pub fn default_path(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| std::env::var_os("POSTCANARY_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("postcanary.toml"))
}

impl Config {
    /// Loads the main file and its includes, validates everything and
    /// resolves secrets. Returns every problem found, each with file, line and key.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_with(path, false)
    }

    /// [`Config::load`] without reading any secret (`env:` variables and
    /// `file:` files are only checked for their form): for `validate
    /// --offline` in a config repository's CI. The result must not be run.
    pub fn load_offline(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_with(path, true)
    }

    /// [`Config::load_offline`], but reading the `[ledger]` password: for
    /// the commands that only read and maintain the ledger (`report`,
    /// `evidence`, `prune`), on SQLite or PostgreSQL. The result must not be run.
    pub fn load_for_ledger(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_mode(path, true, true)
    }

    fn load_with(path: &Path, offline: bool) -> Result<Config, ConfigErrors> {
        Config::load_mode(path, offline, false)
    }

    fn load_mode(path: &Path, offline: bool, ledger_secrets: bool) -> Result<Config, ConfigErrors> {
        let main_src = SourceFile::read(path)?;
        let mut main: RawMain = main_src.parse()?;
        let mut loader = Loader {
            files: vec![main_src],
            errors: Vec::new(),
            offline,
            ledger_secrets,
        };

        let mut senders: Vec<(Origin, RawSender)> = Vec::new();
        let mut inboxes: Vec<(Origin, RawInbox)> = Vec::new();
        let mut channels: Vec<(Origin, RawChannel)> = Vec::new();
        push_indexed(&mut senders, 0, main.sender);
        push_indexed(&mut inboxes, 0, main.inbox);
        push_indexed(&mut channels, 0, main.channel);
        let mut logins: Vec<(Origin, form::RawLogin)> = Vec::new();
        push_indexed(&mut logins, 0, main.login);
        let mut step_lists: Vec<(Origin, form::RawStepList)> = Vec::new();
        push_indexed(&mut step_lists, 0, main.step_list);

        let base = base_dir(path);
        let line = loader.files[0].top_key_line("include");
        for pattern in &main.include {
            let full = base.join(pattern);
            let full_str = full.to_string_lossy().to_string();
            let mut matched: Vec<PathBuf> = match glob::glob(&full_str) {
                Ok(paths) => paths.filter_map(Result::ok).collect(),
                Err(e) => {
                    let err = loader.files[0].error(line, Some("include"), format!("invalid glob {pattern:?}: {e}"));
                    loader.errors.push(err);
                    continue;
                }
            };
            matched.sort();
            if matched.is_empty() {
                let err = loader.files[0].error(line, Some("include"), format!("{pattern:?} matches no file"));
                loader.errors.push(err);
            }
            for file in matched {
                let src = match SourceFile::read(&file) {
                    Ok(s) => s,
                    Err(e) => {
                        loader.errors.push(e);
                        continue;
                    }
                };
                match src.parse::<RawInclude>() {
                    Ok(inc) => {
                        let idx = loader.files.len();
                        push_indexed(&mut senders, idx, inc.sender);
                        push_indexed(&mut inboxes, idx, inc.inbox);
                        push_indexed(&mut channels, idx, inc.channel);
                        push_indexed(&mut logins, idx, inc.login);
                        push_indexed(&mut step_lists, idx, inc.step_list);
                        loader.files.push(src);
                    }
                    Err(e) => loader.errors.push(e),
                }
            }
        }

        let ledger = build_ledger(&mut loader, main.ledger, &base);
        let token = build_token(&mut loader, main.token);
        let defaults = main.defaults.unwrap_or_default();
        let default_schedule: Schedule = match defaults.schedule {
            Some(s) => s,
            None => DEFAULT_SCHEDULE
                .parse()
                .map_err(|m: String| loader.files[0].error(None, None, m))?,
        };
        let default_deadline = defaults
            .deadline
            .map(HumanDuration::as_duration)
            .unwrap_or(DEFAULT_DEADLINE);
        let jitter = defaults
            .jitter
            .map(HumanDuration::as_duration)
            .unwrap_or(DEFAULT_JITTER);
        let default_owner = defaults.owner.unwrap_or_else(|| "unassigned".to_string());
        if default_deadline.is_zero() {
            let line = loader.files[0].table_key_line("defaults", "deadline");
            let e = loader.files[0].error(line, Some("defaults.deadline"), "deadline must be longer than zero");
            loader.errors.push(e);
        }

        // References are checked against every declared name, so that one bad
        // sender does not also show up as an error in each of its channels.
        let sender_names: Vec<String> = senders.iter().map(|(_, s)| s.name.clone()).collect();
        let inbox_names: Vec<String> = inboxes.iter().map(|(_, i)| i.name.clone()).collect();
        let graph_inboxes: Vec<String> = inboxes
            .iter()
            .filter(|(_, i)| i.kind == inbox::InboxKind::Graph)
            .map(|(_, i)| i.name.clone())
            .collect();
        let senders = build_senders(&mut loader, senders, &inbox_names);
        let inboxes = build_inboxes(&mut loader, inboxes);
        let mut raw_notifiers = Vec::new();
        push_indexed(&mut raw_notifiers, 0, main.notifier);
        let notifiers = build_notifiers(&mut loader, raw_notifiers, &sender_names);
        let notifier_names: Vec<String> = notifiers.iter().map(|n| n.name.clone()).collect();
        let default_notify = defaults.notify.clone().unwrap_or_default();
        for n in &default_notify {
            if !notifier_names.contains(n) {
                let line = loader.files[0].table_key_line("defaults", "notify");
                let e = loader.files[0].error(line, Some("defaults.notify"), format!("no [[notifier]] named {n:?}"));
                loader.errors.push(e);
            }
        }
        let mut raw_owners = Vec::new();
        push_indexed(&mut raw_owners, 0, main.owner);
        let mut owner_escalation = Vec::new();
        let owner_routes = build_owners(&mut loader, raw_owners, &notifier_names, &mut owner_escalation);
        let policy = build_default_policy(
            &mut loader,
            defaults.require_tls.as_ref(),
            defaults.require_auth.as_ref(),
        );
        let defaults = ChannelDefaults {
            policy,
            schedule: default_schedule,
            deadline: default_deadline,
            jitter,
            owner: default_owner,
            notify: default_notify.clone(),
            owner_routes,
            notifiers: notifier_names,
            retain: defaults.retain.clone(),
        };
        let logins = form::build_logins(&mut loader, logins);
        let login_names: Vec<String> = logins.iter().map(|l| l.name.clone()).collect();
        let step_lists = form::build_step_lists(&mut loader, step_lists);
        let names = Names {
            senders: &sender_names,
            inboxes: &inbox_names,
            graph_inboxes: &graph_inboxes,
            logins: &login_names,
            step_lists: &step_lists,
        };
        let channels = build_channels(&mut loader, channels, &names, &defaults);
        let mut raw_silences = Vec::new();
        push_indexed(&mut raw_silences, 0, main.silence);
        let silences = build_silences(&mut loader, raw_silences, &channels);
        let escalation = main.paging.as_mut().and_then(|p| {
            let (after, to) = (p.escalate_after, p.escalate_to.take());
            build_escalation(&mut loader, None, "paging", after, to, &defaults.notifiers)
        });
        let paging = PagingConfig {
            escalation,
            owner_escalation,
            default_notify,
            reminder_interval: main
                .paging
                .as_ref()
                .and_then(|p| p.reminder_interval)
                .map(HumanDuration::as_duration)
                .filter(|d| !d.is_zero()),
            fallback_after: main
                .paging
                .as_ref()
                .and_then(|p| p.fallback_after)
                .map(HumanDuration::as_duration)
                .unwrap_or(Duration::from_secs(120)),
        };
        let heartbeat = build_heartbeat(&mut loader, main.heartbeat);
        let vantage = vantage::build_vantage(&mut loader, main.vantage, &ledger);
        let server = build_server(&mut loader, main.server);
        let telemetry = main.telemetry.and_then(|t| {
            if !(t.otlp_endpoint.starts_with("http://") || t.otlp_endpoint.starts_with("https://")) {
                let line = loader.files[0].table_key_line("telemetry", "otlp_endpoint");
                let e = loader.files[0].error(
                    line,
                    Some("telemetry.otlp_endpoint"),
                    format!(
                        "{:?} is not an http(s) URL (OTLP over HTTP, e.g. \"http://127.0.0.1:4318\")",
                        t.otlp_endpoint
                    ),
                );
                loader.errors.push(e);
                return None;
            }
            Some(TelemetryConfig {
                otlp_endpoint: t.otlp_endpoint,
                service_name: t.service_name.unwrap_or_else(|| "postcanary".into()),
                export_interval: t
                    .export_interval
                    .map(HumanDuration::as_duration)
                    .unwrap_or(Duration::from_secs(60)),
            })
        });

        let dns = main.dns.map(|d| {
            let nameserver = d.nameserver.as_deref().and_then(|n| match parse_nameserver(n) {
                Some(a) => Some(a),
                None => {
                    let line = loader.files[0].table_key_line("dns", "nameserver");
                    let e = loader.files[0].error(
                        line,
                        Some("dns.nameserver"),
                        format!("{n:?} is not an IP address (with an optional :port)"),
                    );
                    loader.errors.push(e);
                    None
                }
            });
            DnsConfig {
                interval: d
                    .interval
                    .map(HumanDuration::as_duration)
                    .unwrap_or(Duration::from_secs(900)),
                nameserver,
            }
        });

        let discover = main.discover.map(|d| {
            let err = |loader: &mut Loader, key: &str, msg: String| {
                let line = loader.files[0].table_key_line("discover", key);
                let e = loader.files[0].error(line, Some(&format!("discover.{key}")), msg);
                loader.errors.push(e);
            };
            let mut sites = Vec::new();
            for s in &d.sites {
                match url::Url::parse(s) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => sites.push(u),
                    _ => err(&mut loader, "sites", format!("{s:?} is not an http(s) URL")),
                }
            }
            if d.sites.is_empty() {
                err(&mut loader, "sites", "name at least one site to crawl".into());
            }
            if let Some(name) = &d.rcpt_check {
                match senders.iter().find(|s| &s.name == name) {
                    Some(s) if s.mx.is_some() => {}
                    Some(_) => err(
                        &mut loader,
                        "rcpt_check",
                        format!("sender {name:?} is not kind = \"mx\""),
                    ),
                    None => err(&mut loader, "rcpt_check", format!("no [[sender]] named {name:?}")),
                }
            }
            DiscoverConfig {
                sites,
                interval: d
                    .interval
                    .map(HumanDuration::as_duration)
                    .unwrap_or(Duration::from_secs(86_400)),
                allow_hosts: d.allow_hosts,
                rcpt_check: d.rcpt_check,
                max_pages: d.max_pages.unwrap_or(500),
            }
        });

        if !loader.errors.is_empty() {
            return Err(ConfigErrors(loader.errors));
        }
        Ok(Config {
            metrics: metrics::build_metrics(main.metrics),
            channel_index: ChannelIndex::default(),
            vantage,
            discover,
            dns,
            path: path.to_path_buf(),
            notifiers,
            paging,
            silences,
            heartbeat,
            server,
            telemetry,
            ledger,
            token,
            senders,
            inboxes,
            channels,
            logins,
        })
    }
}

impl Config {
    /// Where postcanary's own part of a channel's canary path ends: a
    /// `kind = "smtp"` sender's relay wrote the first hop; an `mx` sender
    /// and a form leave nothing of ours in the path.
    pub fn our_side(&self, ch: &Channel) -> crate::compliance::OurSide {
        match &ch.kind {
            ChannelKind::Mail { via, .. } => match self.sender(via) {
                Some(s) if s.mx.is_none() => crate::compliance::OurSide::Relay { host: s.host.clone() },
                _ => crate::compliance::OurSide::Nothing,
            },
            ChannelKind::Form { .. } => crate::compliance::OurSide::Nothing,
        }
    }
}

#[cfg(test)]
mod tests;
