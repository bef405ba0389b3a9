//! `[[inbox]]`: the mailboxes watchers read (IMAP or Microsoft Graph), which
//! folder, and an app registration's client credentials.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use super::form;
use super::loader::{base_dir, check_name, check_tls_host, Loader, Origin};
use super::values::{AfterConfirm, HumanDuration, Secret, SecretRef, Tls};

/// How long a probe waits for a blind watcher of its inbox past its deadline.
pub const DEFAULT_BLIND_GRACE: Duration = Duration::from_secs(300);

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
#[derive(Clone, Debug, PartialEq)]
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
    /// Extra trust anchors (an internal CA) for the Graph and token endpoints.
    pub ca_file: Option<super::ca::CaFile>,
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
            ca_file: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct InboxConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub username: String,
    pub password: Secret,
    pub mailbox: String,
    pub after_confirm: AfterConfirm,
    /// How often to look when the server has no IDLE (and the longest an IDLE lasts).
    pub poll_interval: Duration,
    /// How long past its deadline a probe waits for this inbox's watcher
    /// while the watcher is blind (disconnected, login refused) before the
    /// probe becomes `error` ("not watched") instead of being judged.
    pub blind_grace: Duration,
    /// Use IMAP IDLE when the server offers it.
    pub idle: bool,
    /// The junk folder to watch as well (a second watcher): probes found there are `junked`.
    pub junk: Option<String>,
    /// Which folder this watcher reads; `Junk` only for the junk watcher made by [`InboxConfig::junk_watcher`].
    pub folder: Folder,
    /// `kind = "graph"`: a Microsoft 365 mailbox read through Microsoft Graph
    /// (`username` is the mailbox's address, `mailbox` the folder, `password` the client secret).
    pub graph: Option<GraphSettings>,
    /// `auth = "xoauth2"` on an IMAP inbox: log in with SASL XOAUTH2 and a
    /// client-credentials token instead of a password.
    pub oauth: Option<ClientCredentials>,
    /// Extra trust anchors for the server's TLS.
    pub ca_file: Option<super::ca::CaFile>,
}

/// How to reach a Microsoft Graph mailbox.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphSettings {
    /// `filter = "subject"`: list only messages whose subject carries a token.
    pub subject_filter: bool,
    pub base_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scope: String,
}

impl InboxConfig {
    /// The Graph watcher's config, for a `kind = "graph"` inbox.
    pub fn graph_config(&self) -> Option<GraphConfig> {
        let g = self.graph.as_ref()?;
        Some(GraphConfig {
            name: self.name.clone(),
            base_url: g.base_url.clone(),
            mailbox: self.username.clone(),
            folder: self.mailbox.clone(),
            role: self.folder.clone(),
            subject_filter: g.subject_filter,
            credentials: ClientCredentials {
                token_url: g.token_url.clone(),
                client_id: g.client_id.clone(),
                client_secret: g.client_secret.clone(),
                scope: g.scope.clone(),
            },
            poll_interval: self.poll_interval,
            after_confirm: self.after_confirm.clone(),
            ca_file: self.ca_file.clone(),
        })
    }
}

impl InboxConfig {
    /// The config of the second watcher that reads the junk folder.
    pub fn junk_watcher(&self) -> Option<InboxConfig> {
        let junk = self.junk.clone()?;
        Some(InboxConfig {
            mailbox: junk.clone(),
            junk: None,
            folder: Folder::Junk(junk),
            ..self.clone()
        })
    }

    /// The key of this watcher's read cursor in the ledger.
    pub fn cursor_key(&self) -> String {
        self.folder.cursor_key(&self.name)
    }

    /// The name of this watcher, for states and logs.
    pub fn watcher_name(&self) -> String {
        self.folder.watcher_name(&self.name)
    }
}

#[derive(Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum InboxKind {
    Imap,
    Graph,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInbox {
    pub(super) name: String,
    pub(super) kind: InboxKind,
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) tls: Option<Tls>,
    pub(super) username: String,
    pub(super) password: Option<SecretRef>,
    pub(super) tenant: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<SecretRef>,
    pub(super) token_url: Option<String>,
    pub(super) graph_url: Option<String>,
    pub(super) auth: Option<String>,
    pub(super) scope: Option<String>,
    pub(super) mailbox: Option<String>,
    pub(super) after_confirm: Option<AfterConfirm>,
    pub(super) poll_interval: Option<HumanDuration>,
    pub(super) blind_grace: Option<HumanDuration>,
    pub(super) idle: Option<bool>,
    pub(super) junk: Option<String>,
    pub(super) filter: Option<String>,
    /// A PEM file of extra CA certificates (an internal CA) for the server's TLS (IMAP or Graph).
    pub(super) ca_file: Option<String>,
}

pub(super) fn build_inboxes(loader: &mut Loader, raw: Vec<(Origin, RawInbox)>) -> Vec<InboxConfig> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (origin, i) in raw {
        const A: &str = "inbox";
        check_name(loader, &mut seen, &origin, A, &i.name);
        let poll_interval = i
            .poll_interval
            .map(HumanDuration::as_duration)
            .unwrap_or(Duration::from_secs(60));
        if poll_interval < Duration::from_millis(100) {
            loader.err(&origin, A, "poll_interval", "poll_interval must be at least 100ms");
        }
        let (host, port, tls, password, graph, oauth) = match i.kind {
            InboxKind::Imap => {
                let xoauth2 = match i.auth.as_deref() {
                    None | Some("password") => false,
                    Some("xoauth2") => true,
                    Some(other) => {
                        loader.err(
                            &origin,
                            A,
                            "auth",
                            format!("auth {other:?}: use \"password\" or \"xoauth2\""),
                        );
                        false
                    }
                };
                if i.filter.is_some() {
                    loader.err(&origin, A, "filter", "`filter` is for kind = \"graph\"");
                }
                let mut oauth_keys = vec![("graph_url", i.graph_url.is_some())];
                if !xoauth2 {
                    oauth_keys.extend([
                        ("tenant", i.tenant.is_some()),
                        ("client_id", i.client_id.is_some()),
                        ("client_secret", i.client_secret.is_some()),
                        ("token_url", i.token_url.is_some()),
                        ("scope", i.scope.is_some()),
                    ]);
                }
                for (key, set) in oauth_keys {
                    if set {
                        loader.err(
                            &origin,
                            A,
                            key,
                            format!("`{key}` is for kind = \"graph\" or auth = \"xoauth2\""),
                        );
                    }
                }
                let host = i.host.clone().unwrap_or_else(|| {
                    loader.err(&origin, A, "kind", "kind = \"imap\" needs `host`");
                    String::new()
                });
                let tls = i.tls.unwrap_or(Tls::Tls);
                check_tls_host(loader, &origin, A, tls, &host);
                let port = i.port.unwrap_or(if tls == Tls::Tls { 993 } else { 143 });
                let (password, oauth) = if xoauth2 {
                    let creds = oauth_credentials(loader, &origin, &i, IMAP_OAUTH_SCOPE);
                    (creds.as_ref().map(|c| c.client_secret.clone()), creds)
                } else {
                    let password = match &i.password {
                        Some(p) => loader.secret(&origin, A, "password", p),
                        None => {
                            loader.err(
                                &origin,
                                A,
                                "kind",
                                "kind = \"imap\" needs `password` (or auth = \"xoauth2\")",
                            );
                            None
                        }
                    };
                    (password, None)
                };
                (host, port, tls, password, None, oauth)
            }
            InboxKind::Graph => {
                for (key, set) in [
                    ("host", i.host.is_some()),
                    ("port", i.port.is_some()),
                    ("tls", i.tls.is_some()),
                    ("password", i.password.is_some()),
                    ("idle", i.idle.is_some()),
                    ("auth", i.auth.is_some()),
                ] {
                    if set {
                        loader.err(
                            &origin,
                            A,
                            key,
                            format!("`{key}` is for kind = \"imap\"; a Graph inbox signs in with `tenant`, `client_id` and `client_secret`"),
                        );
                    }
                }
                let creds = oauth_credentials(loader, &origin, &i, GRAPH_SCOPE);
                let base_url = i.graph_url.clone().unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
                if let Err(m) = form::check_url(&base_url) {
                    loader.err(&origin, A, "graph_url", m);
                }
                let subject_filter = match i.filter.as_deref() {
                    None | Some("none") => false,
                    Some("subject") => true,
                    Some(other) => {
                        loader.err(
                            &origin,
                            A,
                            "filter",
                            format!("filter {other:?}: use \"subject\" (read only messages with a token in the subject) or \"none\""),
                        );
                        false
                    }
                };
                let secret = creds.as_ref().map(|c| c.client_secret.clone());
                let graph = creds.map(|c| GraphSettings {
                    subject_filter,
                    base_url,
                    token_url: c.token_url,
                    client_id: c.client_id,
                    client_secret: c.client_secret,
                    scope: c.scope,
                });
                (String::new(), 0, Tls::Tls, secret, graph, None)
            }
        };
        let ca_file = i.ca_file.as_deref().and_then(|p| {
            let base = base_dir(&loader.files[origin.file].path);
            super::ca::CaFile::read(&base, p)
                .map_err(|m| loader.err(&origin, "inbox", "ca_file", m))
                .ok()
        });
        if let Some(password) = password {
            let mailbox = match (&i.mailbox, i.kind) {
                (Some(m), _) => m.clone(),
                (None, InboxKind::Imap) => "INBOX".to_string(),
                (None, InboxKind::Graph) => DEFAULT_FOLDER.to_string(),
            };
            out.push(InboxConfig {
                name: i.name,
                host,
                port,
                tls,
                username: i.username,
                password,
                mailbox,
                after_confirm: i.after_confirm.unwrap_or(AfterConfirm::Keep),
                poll_interval,
                blind_grace: i
                    .blind_grace
                    .map(HumanDuration::as_duration)
                    .unwrap_or(DEFAULT_BLIND_GRACE),
                idle: i.idle.unwrap_or(true),
                junk: i.junk.filter(|j| !j.is_empty()),
                folder: Folder::Main,
                graph,
                oauth,
                ca_file,
            });
        }
    }
    out
}

/// The scope of a token for Exchange Online IMAP.
pub(super) const IMAP_OAUTH_SCOPE: &str = "https://outlook.office365.com/.default";

/// The client-credentials settings of an inbox (Graph, or IMAP with XOAUTH2).
pub(super) fn oauth_credentials(
    loader: &mut Loader,
    origin: &Origin,
    i: &RawInbox,
    default_scope: &str,
) -> Option<ClientCredentials> {
    const A: &str = "inbox";
    let secret = match &i.client_secret {
        Some(r) => loader.secret(origin, A, "client_secret", r),
        None => {
            loader.err(origin, A, "kind", "OAuth needs `client_secret` (env: or file:)");
            None
        }
    };
    let client_id = i.client_id.clone().unwrap_or_else(|| {
        loader.err(origin, A, "kind", "OAuth needs `client_id`, the app registration's id");
        String::new()
    });
    let token_url = match (&i.token_url, &i.tenant) {
        (Some(u), _) => u.clone(),
        (None, Some(t)) => format!("https://login.microsoftonline.com/{t}/oauth2/v2.0/token"),
        (None, None) => {
            loader.err(origin, A, "kind", "OAuth needs `tenant` (or `token_url`)");
            String::new()
        }
    };
    if !token_url.is_empty() {
        if let Err(m) = form::check_url(&token_url) {
            loader.err(origin, A, "token_url", m);
        }
    }
    Some(ClientCredentials {
        token_url,
        client_id,
        client_secret: secret?,
        scope: i.scope.clone().unwrap_or_else(|| default_scope.to_string()),
    })
}
