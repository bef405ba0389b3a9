//! The inbox types every watcher reads its settings from: which folder, a
//! Graph mailbox, an app registration's client credentials.

use std::time::Duration;

use super::{AfterConfirm, Secret};

pub const DEFAULT_BASE_URL: &str = "https://graph.microsoft.com/v1.0";
pub const DEFAULT_FOLDER: &str = "Inbox";
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// Which folder of an inbox a watcher reads.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Folder {
    /// The folder people work from (`mailbox`).
    #[default]
    Main,
    /// The junk folder, by name: a probe found here is `junked`.
    Junk(String),
}

impl Folder {
    /// The key of the read cursor in the ledger of inbox `inbox`'s watcher
    /// on this folder: the junk watcher keeps its own.
    pub fn cursor_key(&self, inbox: &str) -> String {
        match self {
            Folder::Main => inbox.to_string(),
            Folder::Junk(f) => format!("{inbox}#{f}"),
        }
    }

    /// The name of inbox `inbox`'s watcher on this folder, for states and logs.
    pub fn watcher_name(&self, inbox: &str) -> String {
        match self {
            Folder::Main => inbox.to_string(),
            Folder::Junk(f) => format!("{inbox} ({f})"),
        }
    }
}

/// The client-credentials grant of one app registration.
#[derive(Clone, Debug)]
pub struct ClientCredentials {
    /// `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`.
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// `https://graph.microsoft.com/.default` for Graph,
    /// `https://outlook.office365.com/.default` for IMAP.
    pub scope: String,
}

/// One Graph inbox.
#[derive(Clone, Debug)]
pub struct GraphConfig {
    pub name: String,
    /// `https://graph.microsoft.com/v1.0`; overridable for national clouds and tests.
    pub base_url: String,
    /// The mailbox's user principal name (or object id).
    pub mailbox: String,
    /// A well-known folder name (`Inbox`, `junkemail`), the display name of
    /// a top-level folder, or a path of display names below one of those
    /// (`Inbox/Postcanary`).
    pub folder: String,
    /// Whether this watcher reads the folder people work from or the junk
    /// folder (a token found there is `junked`).
    pub role: Folder,
    /// List only messages whose subject contains a token's prefix
    /// (`$filter=… and contains(subject,'pc-')`), so the watcher never reads
    /// the rest of a mailbox people use. Probe mail carries its token in the
    /// subject; form mail only if the form's subject field is given
    /// `{{token}}`; a Postfix or Exim bounce does not.
    pub subject_filter: bool,
    pub credentials: ClientCredentials,
    pub poll_interval: Duration,
    /// `delete` moves to Deleted Items, as Graph's DELETE does.
    pub after_confirm: AfterConfirm,
}

impl GraphConfig {
    /// The key of this watcher's read cursor in the ledger (as for IMAP: the
    /// junk watcher keeps its own).
    pub fn cursor_key(&self) -> String {
        self.role.cursor_key(&self.name)
    }

    /// The name of this watcher, for states and logs.
    pub fn watcher_name(&self) -> String {
        self.role.watcher_name(&self.name)
    }

    /// A config with the defaults: Graph's public endpoint, the Inbox, a
    /// 30 s poll, and messages kept.
    pub fn new(name: impl Into<String>, mailbox: impl Into<String>, credentials: ClientCredentials) -> GraphConfig {
        GraphConfig {
            name: name.into(),
            base_url: DEFAULT_BASE_URL.into(),
            mailbox: mailbox.into(),
            folder: DEFAULT_FOLDER.into(),
            role: Folder::Main,
            subject_filter: false,
            credentials,
            poll_interval: Duration::from_secs(30),
            after_confirm: AfterConfirm::Keep,
        }
    }
}
