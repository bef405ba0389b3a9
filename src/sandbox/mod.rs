//! An in-process mail sandbox: an SMTP receiver and an IMAP server on
//! loopback over one shared in-memory [`MailStore`]. It speaks enough of both
//! protocols for the real sender (lettre) and the real IMAP watcher
//! (async-imap) to work against it unchanged, so `postcanary demo` needs no
//! mail server and tests can inject faults (slow SMTP, 4xx storms, dropped
//! IMAP connections, routing changes) without one either.
//!
//! Everything here is plaintext on 127.0.0.1 and meant for demos and tests,
//! never for real mail.

mod conn;
pub mod imap;
pub mod smtp;
pub mod store;

use std::io;
use std::net::SocketAddr;

pub use imap::{ImapFaults, ImapOptions, ImapServer};
pub use smtp::{SmtpFaults, SmtpOptions, SmtpServer};
pub use store::{MailEvent, MailStore, Route, StoreError, StoreLimits, StoredMessage};

/// Options for [`Sandbox::start`].
#[derive(Clone, Debug, Default)]
pub struct SandboxOptions {
    pub smtp: SmtpOptions,
    pub imap: ImapOptions,
}

/// Both servers over one store.
pub struct Sandbox {
    store: MailStore,
    smtp: SmtpServer,
    imap: ImapServer,
}

impl Sandbox {
    /// Starts the SMTP and IMAP servers on 127.0.0.1 with ephemeral ports.
    pub async fn start(store: MailStore, options: SandboxOptions) -> io::Result<Sandbox> {
        let smtp = SmtpServer::start(store.clone(), options.smtp).await?;
        let imap = ImapServer::start(store.clone(), options.imap).await?;
        Ok(Sandbox { store, smtp, imap })
    }

    pub fn store(&self) -> &MailStore {
        &self.store
    }
    pub fn smtp(&self) -> &SmtpServer {
        &self.smtp
    }
    pub fn imap(&self) -> &ImapServer {
        &self.imap
    }
    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp.addr()
    }
    pub fn imap_addr(&self) -> SocketAddr {
        self.imap.addr()
    }

    /// Stops accepting, ends every session and waits for all tasks.
    pub async fn shutdown(self) {
        let Sandbox { smtp, imap, .. } = self;
        tokio::join!(smtp.shutdown(), imap.shutdown());
    }
}
