//! Configuration: the main TOML file plus the files its `include` globs pull
//! in, parsed strictly (unknown keys are errors), validated, with every secret
//! reference resolved. The result is a [`Config`] in which every reference
//! (a channel's sender and inbox) is known to exist.

pub mod form;
mod schema;
mod source;
pub mod values;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::notify::{NotifierConfig, NotifierKind};

pub use schema::config_schema;
pub use source::{ConfigError, ConfigErrors, SourceFile};
pub use values::{AfterConfirm, Expect, HumanDuration, Schedule, Secret, SecretRef, Tls};

/// The loaded, validated configuration.
#[derive(Debug)]
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
}

/// `[discover]`: crawl the organisation's sites every `interval` for
/// published channels nobody probes.
#[derive(Debug, Clone)]
pub struct DiscoverConfig {
    pub sites: Vec<url::Url>,
    pub interval: Duration,
    /// Further hosts whose pages may be crawled.
    pub allow_hosts: Vec<String>,
    /// A `kind = "mx"` sender to ask each look-alike's MX at RCPT time.
    pub rcpt_check: Option<String>,
    /// Most pages requested per round.
    pub max_pages: usize,
}

/// `[dns]`: watch the routing records of every domain probed.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub interval: Duration,
    /// Ask this server instead of the system's resolver.
    pub nameserver: Option<std::net::SocketAddr>,
}

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
        self.channels.iter().find(|c| c.id == id)
    }
}

/// OpenTelemetry export.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318` (`/v1/traces` and `/v1/metrics` are appended).
    pub otlp_endpoint: String,
    pub service_name: String,
    pub export_interval: Duration,
}

/// Labels of the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Da,
    En,
}

/// The HTTP server: status page, JSON API, `/metrics`, `/healthz`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: std::net::SocketAddr,
    pub language: Language,
    pub title: String,
    /// Accepted `Authorization: Bearer` tokens.
    pub bearer_tokens: Vec<Secret>,
    /// Accepted HTTP basic credentials.
    pub basic: Option<(String, Secret)>,
    /// `/healthz` without credentials (default true).
    pub public_healthz: bool,
    /// `/metrics` without credentials (default false).
    pub public_metrics: bool,
}

impl ServerConfig {
    pub fn has_auth(&self) -> bool {
        !self.bearer_tokens.is_empty() || self.basic.is_some()
    }
}

/// Paging policy.
#[derive(Debug, Clone)]
pub struct PagingConfig {
    /// Notifiers for pages about the prober itself and for channels that name none.
    pub default_notify: Vec<String>,
    /// Re-page an open incident this often; `None`: never.
    pub reminder_interval: Option<Duration>,
    /// Use a notifier's fallback once it has failed for this long.
    pub fallback_after: Duration,
}

/// A maintenance window: failures are recorded but not paged until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    pub channel: Option<String>,
    pub owner: Option<String>,
    pub from: Option<crate::verdict::Millis>,
    pub until: crate::verdict::Millis,
    pub reason: String,
}

impl Silence {
    pub fn covers(&self, channel: &str, owner: &str, at: crate::verdict::Millis) -> bool {
        let who = self.channel.as_deref() == Some(channel) || self.owner.as_deref() == Some(owner);
        who && self.from.is_none_or(|f| f <= at) && at < self.until
    }
}

/// Dead-man's switch: a request to `url` every `interval` while postcanary is healthy.
#[derive(Debug, Clone)]
pub struct HeartbeatConfig {
    pub url: Secret,
    pub interval: Duration,
    pub post: bool,
}

#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Where the ledger lives; only SQLite for now.
    pub backend: LedgerBackend,
    /// Probes (with their evidence) older than this are pruned daily; `None`: kept for ever.
    pub keep_probes: Option<Duration>,
    /// Daily per-channel rollups older than this are pruned.
    pub keep_rollups: Duration,
}

/// How long daily rollups are kept by default (a year and a month).
pub const DEFAULT_KEEP_ROLLUPS: Duration = Duration::from_secs(400 * 86_400);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerBackend {
    Sqlite(PathBuf),
}

#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// HMAC key for token tags; when `None`, one is generated once and kept in the ledger.
    pub key: Option<Secret>,
    /// Tokens older than this never count as a delivery.
    pub max_age: Duration,
}

#[derive(Debug, Clone)]
pub struct SenderConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The From header and envelope sender.
    pub from: lettre::message::Mailbox,
    /// Name sent in EHLO; defaults to the machine's host name.
    pub helo: Option<String>,
    /// Limit for one SMTP conversation.
    pub timeout: Duration,
    /// `kind = "mx"`: deliver straight to the recipient domain's MX hosts.
    pub mx: Option<MxOptions>,
    /// The inbox this sender's bounces come back to (its `from` mailbox).
    /// When set, a bounce about one of its probes counts only there; found
    /// anywhere else it is evidence.
    pub bounce_inbox: Option<String>,
    /// Sign probes with DKIM (`dkim_domain`, `dkim_selector`, `dkim_key`).
    pub dkim: Option<crate::sender::dkim::DkimSigner>,
}

/// How a `kind = "mx"` sender delivers.
#[derive(Debug, Clone)]
pub struct MxOptions {
    /// Port of the MX hosts (25; other values for tests and lab setups).
    pub port: u16,
    /// Fail the probe unless the receiving side does STARTTLS with TLS 1.2 or later.
    pub require_tls: bool,
    /// Ask this DNS server instead of the system's resolver.
    pub nameserver: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone)]
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
    pub folder: crate::inbox::Folder,
    /// `kind = "graph"`: a Microsoft 365 mailbox read through Microsoft Graph
    /// (`username` is the mailbox's address, `mailbox` the folder, `password` the client secret).
    pub graph: Option<GraphSettings>,
    /// `auth = "xoauth2"` on an IMAP inbox: log in with SASL XOAUTH2 and a
    /// client-credentials token instead of a password.
    pub oauth: Option<crate::inbox::oauth::ClientCredentials>,
}

/// How to reach a Microsoft Graph mailbox.
#[derive(Debug, Clone)]
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
    pub fn graph_config(&self) -> Option<crate::inbox::graph::GraphConfig> {
        let g = self.graph.as_ref()?;
        Some(crate::inbox::graph::GraphConfig {
            name: self.name.clone(),
            base_url: g.base_url.clone(),
            mailbox: self.username.clone(),
            folder: self.mailbox.clone(),
            role: self.folder.clone(),
            subject_filter: g.subject_filter,
            credentials: crate::inbox::oauth::ClientCredentials {
                token_url: g.token_url.clone(),
                client_id: g.client_id.clone(),
                client_secret: g.client_secret.clone(),
                scope: g.scope.clone(),
            },
            poll_interval: self.poll_interval,
            after_confirm: self.after_confirm.clone(),
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
            folder: crate::inbox::Folder::Junk(junk),
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

#[derive(Debug, Clone)]
pub struct Channel {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub kind: ChannelKind,
    pub expect: Expect,
    /// The inbox the probe must land in (`deliver`, `forward`); optional for `bounce`.
    pub inbox: Option<String>,
    pub schedule: Schedule,
    pub deadline: Duration,
    /// This channel's fixed offset from its schedule, derived from its id.
    pub jitter_offset: Duration,
    /// Where this channel's pages go (channel, else owner, else defaults).
    pub notify: Vec<String>,
    /// A control channel: the prober's own mailbox through the same sender.
    /// Its failure means postcanary itself is degraded.
    pub control: bool,
}

#[derive(Debug, Clone)]
pub enum ChannelKind {
    Mail {
        to: lettre::Address,
        via: String,
    },
    /// A web form, submitted by following `steps`.
    Form {
        steps: Vec<form::Step>,
    },
}

impl ChannelKind {
    pub fn name(&self) -> &'static str {
        match self {
            ChannelKind::Mail { .. } => "mail",
            ChannelKind::Form { .. } => "form",
        }
    }

    /// What is probed, for the ledger and the status page: the address, or
    /// the form's first URL.
    pub fn target(&self) -> String {
        match self {
            ChannelKind::Mail { to, .. } => to.to_string(),
            ChannelKind::Form { steps } => steps
                .iter()
                .find_map(|s| match &s.action {
                    form::Action::Get(t) | form::Action::Post(t) => Some(t.0.clone()),
                    form::Action::Login(l) | form::Action::Handoff(l) => Some(format!("login {l}")),
                    form::Action::Submit(_) => None,
                })
                .unwrap_or_default(),
        }
    }
}

// ---------------------------------------------------------------------------
// The file formats, exactly as written. `deny_unknown_fields` everywhere.

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawMain {
    #[serde(default)]
    include: Vec<String>,
    ledger: Option<RawLedger>,
    token: Option<RawToken>,
    defaults: Option<RawDefaults>,
    #[serde(default)]
    sender: Vec<RawSender>,
    #[serde(default)]
    inbox: Vec<RawInbox>,
    #[serde(default)]
    channel: Vec<RawChannel>,
    #[serde(default)]
    login: Vec<form::RawLogin>,
    #[serde(default)]
    notifier: Vec<RawNotifier>,
    #[serde(default)]
    owner: Vec<RawOwner>,
    #[serde(default)]
    silence: Vec<RawSilence>,
    paging: Option<RawPaging>,
    heartbeat: Option<RawHeartbeat>,
    server: Option<RawServer>,
    telemetry: Option<RawTelemetry>,
    dns: Option<RawDns>,
    discover: Option<RawDiscover>,
}

/// `[discover]`: crawl the organisation's sites on a schedule for published channels nobody probes.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawDiscover {
    /// Start URLs of the sites to crawl.
    sites: Vec<String>,
    /// How often (default 1d).
    interval: Option<HumanDuration>,
    /// Further hosts whose pages may be crawled.
    #[serde(default)]
    allow_hosts: Vec<String>,
    /// A `kind = "mx"` sender for asking each look-alike's MX at RCPT time.
    rcpt_check: Option<String>,
    /// Most pages requested per round (default 500).
    max_pages: Option<usize>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    otlp_endpoint: String,
    service_name: Option<String>,
    export_interval: Option<HumanDuration>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    language: Option<Language>,
    title: Option<String>,
    #[serde(default)]
    bearer_tokens: Vec<SecretRef>,
    basic_user: Option<String>,
    basic_password: Option<SecretRef>,
    public_healthz: Option<bool>,
    public_metrics: Option<bool>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawNotifier {
    name: String,
    kind: NotifierKind,
    url: Option<String>,
    routing_key: Option<SecretRef>,
    api_key: Option<SecretRef>,
    secret: Option<SecretRef>,
    via: Option<String>,
    #[serde(default)]
    to: Vec<String>,
    fallback: Option<String>,
    timeout: Option<HumanDuration>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawOwner {
    name: String,
    notify: Vec<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawSilence {
    channel: Option<String>,
    owner: Option<String>,
    from: Option<String>,
    until: String,
    reason: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawPaging {
    reminder_interval: Option<HumanDuration>,
    fallback_after: Option<HumanDuration>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawHeartbeat {
    url: SecretRef,
    interval: Option<HumanDuration>,
    method: Option<String>,
}

/// An included file may define senders, inboxes and channels.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawInclude {
    #[serde(default)]
    sender: Vec<RawSender>,
    #[serde(default)]
    inbox: Vec<RawInbox>,
    #[serde(default)]
    channel: Vec<RawChannel>,
    #[serde(default)]
    login: Vec<form::RawLogin>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawDns {
    interval: Option<HumanDuration>,
    nameserver: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    url: Option<String>,
    /// Prune probes and their evidence older than this (whole days, at least
    /// "1d"), daily; unset: keep every probe. Open incidents keep theirs.
    keep_probes: Option<HumanDuration>,
    /// Prune daily per-channel rollups older than this (default "400d").
    keep_rollups: Option<HumanDuration>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawToken {
    key: Option<SecretRef>,
    max_age: Option<HumanDuration>,
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    schedule: Option<Schedule>,
    deadline: Option<HumanDuration>,
    jitter: Option<HumanDuration>,
    owner: Option<String>,
    notify: Option<Vec<String>>,
}

#[derive(Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum SenderKind {
    Smtp,
    Mx,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawSender {
    name: String,
    kind: SenderKind,
    host: Option<String>,
    port: Option<u16>,
    tls: Option<Tls>,
    username: Option<String>,
    password: Option<SecretRef>,
    from: String,
    helo: Option<String>,
    timeout: Option<HumanDuration>,
    require_tls: Option<bool>,
    nameserver: Option<String>,
    bounce_inbox: Option<String>,
    dkim_selector: Option<String>,
    dkim_domain: Option<String>,
    dkim_key: Option<SecretRef>,
}

#[derive(Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum InboxKind {
    Imap,
    Graph,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawInbox {
    name: String,
    kind: InboxKind,
    host: Option<String>,
    port: Option<u16>,
    tls: Option<Tls>,
    username: String,
    password: Option<SecretRef>,
    tenant: Option<String>,
    client_id: Option<String>,
    client_secret: Option<SecretRef>,
    token_url: Option<String>,
    graph_url: Option<String>,
    auth: Option<String>,
    scope: Option<String>,
    mailbox: Option<String>,
    after_confirm: Option<AfterConfirm>,
    poll_interval: Option<HumanDuration>,
    blind_grace: Option<HumanDuration>,
    idle: Option<bool>,
    junk: Option<String>,
    filter: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawChannelKind {
    Mail,
    Form,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    id: String,
    name: String,
    owner: Option<String>,
    kind: RawChannelKind,
    to: Option<String>,
    via: Option<String>,
    expect: Option<Expect>,
    inbox: Option<String>,
    schedule: Option<Schedule>,
    deadline: Option<HumanDuration>,
    notify: Option<Vec<String>>,
    control: Option<bool>,
    #[serde(default)]
    step: Vec<form::RawStep>,
}

/// Where a table came from: its file and its index among that file's
/// `[[kind]]` tables, to point errors at the right lines.
struct Origin {
    file: usize,
    index: usize,
}

struct Loader {
    files: Vec<SourceFile>,
    errors: Vec<ConfigError>,
    /// `validate --offline`: secret references are checked for their form
    /// only; no variable or file is read.
    offline: bool,
}

/// What a secret holds in a config loaded offline (never used to connect).
pub const OFFLINE_SECRET: &str = "(not read: offline validation)";

impl Loader {
    fn at(&self, origin: &Origin, array: &str, key: &str) -> (usize, Option<usize>) {
        (
            origin.file,
            self.files[origin.file].array_key_line(array, origin.index, key),
        )
    }

    fn err(&mut self, origin: &Origin, array: &str, key: &str, message: impl Into<String>) {
        let (file, line) = self.at(origin, array, key);
        let e = self.files[file].error(line, Some(&format!("{array}.{key}")), message);
        self.errors.push(e);
    }

    /// An error in the `step`-th `[[channel.step]]` of a channel.
    fn err_step(&mut self, origin: &Origin, step: usize, key: &str, message: impl Into<String>) {
        let line = self.files[origin.file].sub_array_key_line("channel", origin.index, "step", step, key);
        let e = self.files[origin.file].error(line, Some(&format!("channel.step[{}].{key}", step + 1)), message);
        self.errors.push(e);
    }

    /// Reads a secret, or, offline, stands in for it.
    fn resolve(&self, r: &SecretRef, base: &Path) -> Result<Secret, String> {
        if self.offline {
            return Ok(Secret::new(OFFLINE_SECRET));
        }
        r.resolve(base)
    }

    fn secret(&mut self, origin: &Origin, array: &str, key: &str, r: &SecretRef) -> Option<Secret> {
        let base = base_dir(&self.files[origin.file].path);
        match self.resolve(r, &base) {
            Ok(s) => Some(s),
            Err(msg) => {
                self.err(origin, array, key, msg);
                None
            }
        }
    }
}

fn base_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

const DEFAULT_SCHEDULE: &str = "every 10m";
const DEFAULT_DEADLINE: Duration = Duration::from_secs(15 * 60);
const DEFAULT_JITTER: Duration = Duration::from_secs(60);
/// How long a probe waits for a blind watcher of its inbox past its deadline.
pub const DEFAULT_BLIND_GRACE: Duration = Duration::from_secs(300);
const DEFAULT_TOKEN_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);

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

    fn load_with(path: &Path, offline: bool) -> Result<Config, ConfigErrors> {
        let main_src = SourceFile::read(path)?;
        let main: RawMain = main_src.parse()?;
        let mut loader = Loader {
            files: vec![main_src],
            errors: Vec::new(),
            offline,
        };

        let mut senders: Vec<(Origin, RawSender)> = Vec::new();
        let mut inboxes: Vec<(Origin, RawInbox)> = Vec::new();
        let mut channels: Vec<(Origin, RawChannel)> = Vec::new();
        push_indexed(&mut senders, 0, main.sender);
        push_indexed(&mut inboxes, 0, main.inbox);
        push_indexed(&mut channels, 0, main.channel);
        let mut logins: Vec<(Origin, form::RawLogin)> = Vec::new();
        push_indexed(&mut logins, 0, main.login);

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
        let owner_routes = build_owners(&mut loader, raw_owners, &notifier_names);
        let defaults = ChannelDefaults {
            schedule: default_schedule,
            deadline: default_deadline,
            jitter,
            owner: default_owner,
            notify: default_notify.clone(),
            owner_routes,
            notifiers: notifier_names,
        };
        let logins = form::build_logins(&mut loader, logins);
        let login_names: Vec<String> = logins.iter().map(|l| l.name.clone()).collect();
        let names = Names {
            senders: &sender_names,
            inboxes: &inbox_names,
            logins: &login_names,
        };
        let channels = build_channels(&mut loader, channels, &names, &defaults);
        let mut raw_silences = Vec::new();
        push_indexed(&mut raw_silences, 0, main.silence);
        let silences = build_silences(&mut loader, raw_silences, &channels);
        let paging = PagingConfig {
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

/// `IP` or `IP:port` (port 53 by default).
fn parse_nameserver(n: &str) -> Option<std::net::SocketAddr> {
    n.parse::<std::net::SocketAddr>().ok().or_else(|| {
        n.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| std::net::SocketAddr::new(ip, 53))
    })
}

/// Every declared name a channel may refer to.
struct Names<'a> {
    senders: &'a [String],
    inboxes: &'a [String],
    logins: &'a [String],
}

fn push_indexed<T>(out: &mut Vec<(Origin, T)>, file: usize, items: Vec<T>) {
    out.extend(
        items
            .into_iter()
            .enumerate()
            .map(|(index, item)| (Origin { file, index }, item)),
    );
}

fn build_ledger(loader: &mut Loader, raw: Option<RawLedger>, base: &Path) -> LedgerConfig {
    let (url, keep_probes, keep_rollups) = match raw {
        Some(r) => (r.url, r.keep_probes.map(|d| d.0), r.keep_rollups.map(|d| d.0)),
        None => (None, None, None),
    };
    for (key, value) in [("keep_probes", keep_probes), ("keep_rollups", keep_rollups)] {
        if let Some(d) = value.filter(|d| d.as_secs() < 86_400 || d.as_secs() % 86_400 != 0) {
            let line = loader.files[0].table_key_line("ledger", key);
            let msg = format!(
                "{} is not whole days: give at least \"1d\", such as \"90d\"",
                values::format_duration(d)
            );
            let e = loader.files[0].error(line, Some(&format!("ledger.{key}")), msg);
            loader.errors.push(e);
        }
    }
    let keep_rollups = keep_rollups.unwrap_or(DEFAULT_KEEP_ROLLUPS);
    let url = url.unwrap_or_else(|| "sqlite://postcanary.db".to_string());
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"));
    let backend = match rest {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            LedgerBackend::Sqlite(if p.is_absolute() { p } else { base.join(p) })
        }
        _ => {
            let line = loader.files[0].table_key_line("ledger", "url");
            let msg = if url.starts_with("postgres") {
                "the Postgres ledger is not available yet; use \"sqlite://PATH\"".to_string()
            } else {
                format!("unsupported ledger url {url:?}: expected \"sqlite://PATH\"")
            };
            let e = loader.files[0].error(line, Some("ledger.url"), msg);
            loader.errors.push(e);
            LedgerBackend::Sqlite(base.join("postcanary.db"))
        }
    };
    LedgerConfig {
        backend,
        keep_probes,
        keep_rollups,
    }
}

fn build_token(loader: &mut Loader, raw: Option<RawToken>) -> TokenConfig {
    let raw = raw.unwrap_or(RawToken {
        key: None,
        max_age: None,
    });
    let key = raw
        .key
        .and_then(|r| match loader.resolve(&r, &base_dir(&loader.files[0].path)) {
            Ok(s) => Some(s),
            Err(m) => {
                let line = loader.files[0].table_key_line("token", "key");
                let e = loader.files[0].error(line, Some("token.key"), m);
                loader.errors.push(e);
                None
            }
        });
    let max_age = raw
        .max_age
        .map(HumanDuration::as_duration)
        .unwrap_or(DEFAULT_TOKEN_MAX_AGE);
    TokenConfig { key, max_age }
}

fn check_name(loader: &mut Loader, seen: &mut HashSet<String>, origin: &Origin, array: &str, name: &str) {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
        loader.err(
            origin,
            array,
            "name",
            format!("name {name:?} must be letters, digits, - and _"),
        );
    } else if !seen.insert(name.to_string()) {
        loader.err(
            origin,
            array,
            "name",
            format!("a {array} named {name:?} is already defined"),
        );
    }
}

fn check_tls_host(loader: &mut Loader, origin: &Origin, array: &str, tls: Tls, host: &str) {
    if tls == Tls::None && !values::is_loopback_host(host) {
        loader.err(
            origin,
            array,
            "tls",
            format!("tls = \"none\" is allowed only for loopback hosts, not {host:?}"),
        );
    }
}

fn build_senders(loader: &mut Loader, raw: Vec<(Origin, RawSender)>, inboxes: &[String]) -> Vec<SenderConfig> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (origin, s) in raw {
        check_name(loader, &mut seen, &origin, "sender", &s.name);
        if let Some(b) = s.bounce_inbox.as_deref().filter(|b| !inboxes.iter().any(|i| i == b)) {
            loader.err(&origin, "sender", "bounce_inbox", format!("no [[inbox]] named {b:?}"));
        }
        let (host, tls, port, mx) = match s.kind {
            SenderKind::Smtp => {
                for (key, set) in [
                    ("require_tls", s.require_tls.is_some()),
                    ("nameserver", s.nameserver.is_some()),
                ] {
                    if set {
                        loader.err(&origin, "sender", key, format!("`{key}` is for kind = \"mx\""));
                    }
                }
                let host = s.host.clone().unwrap_or_else(|| {
                    loader.err(&origin, "sender", "kind", "kind = \"smtp\" needs `host`, the relay");
                    String::new()
                });
                let tls = s.tls.unwrap_or(Tls::Starttls);
                check_tls_host(loader, &origin, "sender", tls, &host);
                let port = s.port.unwrap_or(match tls {
                    Tls::Tls => 465,
                    Tls::Starttls => 587,
                    Tls::None => 25,
                });
                (host, tls, port, None)
            }
            SenderKind::Mx => {
                for (key, set) in [
                    ("host", s.host.is_some()),
                    ("tls", s.tls.is_some()),
                    ("username", s.username.is_some()),
                ] {
                    if set {
                        loader.err(
                            &origin,
                            "sender",
                            key,
                            format!("`{key}` is for kind = \"smtp\"; an MX sender finds its hosts in DNS and uses STARTTLS when offered (`require_tls` to insist)"),
                        );
                    }
                }
                let nameserver = s.nameserver.as_deref().and_then(|n| {
                    let a = parse_nameserver(n);
                    if a.is_none() {
                        loader.err(
                            &origin,
                            "sender",
                            "nameserver",
                            format!("{n:?} is not an IP address (with an optional :port)"),
                        );
                    }
                    a
                });
                let port = s.port.unwrap_or(25);
                let mx = MxOptions {
                    port,
                    require_tls: s.require_tls.unwrap_or(false),
                    nameserver,
                };
                (
                    "(MX of the recipient domain)".to_string(),
                    Tls::Starttls,
                    port,
                    Some(mx),
                )
            }
        };
        let from = match s.from.parse::<lettre::message::Mailbox>() {
            Ok(m) => Some(m),
            Err(e) => {
                loader.err(&origin, "sender", "from", format!("invalid address {:?}: {e}", s.from));
                None
            }
        };
        let password = match &s.password {
            Some(r) => loader.secret(&origin, "sender", "password", r),
            None => None,
        };
        if s.password.is_some() != s.username.is_some() {
            loader.err(
                &origin,
                "sender",
                "username",
                "username and password must be given together",
            );
        }
        let timeout = s
            .timeout
            .map(HumanDuration::as_duration)
            .unwrap_or(Duration::from_secs(60));
        let dkim = build_dkim(loader, &origin, &s, from.as_ref());
        if let Some(from) = from {
            out.push(SenderConfig {
                name: s.name,
                host,
                port,
                tls,
                username: s.username,
                password,
                from,
                helo: s.helo,
                timeout,
                mx,
                bounce_inbox: s.bounce_inbox,
                dkim,
            });
        }
    }
    out
}

/// `dkim_domain`, `dkim_selector` and `dkim_key` together or not at all; the
/// key must load, and the From domain must be the DKIM domain or below it
/// (else DMARC cannot align).
fn build_dkim(
    loader: &mut Loader,
    origin: &Origin,
    s: &RawSender,
    from: Option<&lettre::message::Mailbox>,
) -> Option<crate::sender::dkim::DkimSigner> {
    let (domain, selector, key) = match (&s.dkim_domain, &s.dkim_selector, &s.dkim_key) {
        (None, None, None) => return None,
        (Some(d), Some(sel), Some(k)) => (d, sel, k),
        _ => {
            let missing: Vec<&str> = [
                ("dkim_domain", s.dkim_domain.is_none()),
                ("dkim_selector", s.dkim_selector.is_none()),
                ("dkim_key", s.dkim_key.is_none()),
            ]
            .into_iter()
            .filter(|(_, m)| *m)
            .map(|(k, _)| k)
            .collect();
            loader.err(
                origin,
                "sender",
                missing.first().copied().unwrap_or("dkim_key"),
                format!(
                    "DKIM signing needs dkim_domain, dkim_selector and dkim_key together; missing {}",
                    missing.join(", ")
                ),
            );
            return None;
        }
    };
    let label_ok = |v: &str| {
        !v.is_empty()
            && v.split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    };
    if !label_ok(selector) {
        loader.err(
            origin,
            "sender",
            "dkim_selector",
            format!("{selector:?} is not a DNS label (letters, digits, -, _)"),
        );
        return None;
    }
    if !label_ok(domain) || !domain.contains('.') {
        loader.err(
            origin,
            "sender",
            "dkim_domain",
            format!("{domain:?} is not a domain name"),
        );
        return None;
    }
    if let Some(from) = from {
        let fd = from.email.domain().to_ascii_lowercase();
        let d = domain.to_ascii_lowercase();
        if fd != d && !fd.ends_with(&format!(".{d}")) {
            loader.err(
                origin,
                "sender",
                "dkim_domain",
                format!("{domain:?} is not the From domain {fd:?} nor a parent of it: DMARC would not align"),
            );
        }
    }
    let secret = loader.secret(origin, "sender", "dkim_key", key)?;
    match crate::sender::dkim::DkimSigner::new(domain, selector, secret.expose()) {
        Ok(signer) => Some(signer),
        Err(e) => {
            loader.err(origin, "sender", "dkim_key", e);
            None
        }
    }
}

fn build_inboxes(loader: &mut Loader, raw: Vec<(Origin, RawInbox)>) -> Vec<InboxConfig> {
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
                let creds = oauth_credentials(loader, &origin, &i, crate::inbox::graph::GRAPH_SCOPE);
                let base_url = i
                    .graph_url
                    .clone()
                    .unwrap_or_else(|| crate::inbox::graph::DEFAULT_BASE_URL.to_string());
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
        if let Some(password) = password {
            let mailbox = match (&i.mailbox, i.kind) {
                (Some(m), _) => m.clone(),
                (None, InboxKind::Imap) => "INBOX".to_string(),
                (None, InboxKind::Graph) => crate::inbox::graph::DEFAULT_FOLDER.to_string(),
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
                folder: crate::inbox::Folder::Main,
                graph,
                oauth,
            });
        }
    }
    out
}

/// The scope of a token for Exchange Online IMAP.
const IMAP_OAUTH_SCOPE: &str = "https://outlook.office365.com/.default";

/// The client-credentials settings of an inbox (Graph, or IMAP with XOAUTH2).
fn oauth_credentials(
    loader: &mut Loader,
    origin: &Origin,
    i: &RawInbox,
    default_scope: &str,
) -> Option<crate::inbox::oauth::ClientCredentials> {
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
    Some(crate::inbox::oauth::ClientCredentials {
        token_url,
        client_id,
        client_secret: secret?,
        scope: i.scope.clone().unwrap_or_else(|| default_scope.to_string()),
    })
}

struct ChannelDefaults {
    schedule: Schedule,
    deadline: Duration,
    jitter: Duration,
    owner: String,
    notify: Vec<String>,
    owner_routes: Vec<(String, Vec<String>)>,
    notifiers: Vec<String>,
}

/// `url` may be a literal or a secret reference; webhook URLs of Slack and
/// Teams carry their credential and must be a reference.
fn notifier_url(loader: &mut Loader, origin: &Origin, kind: NotifierKind, raw: &str) -> Option<String> {
    if raw.starts_with("env:") || raw.starts_with("file:") {
        let r: SecretRef = match raw.parse() {
            Ok(r) => r,
            Err(m) => {
                loader.err(origin, "notifier", "url", m);
                return None;
            }
        };
        return loader
            .secret(origin, "notifier", "url", &r)
            .map(|s| s.expose().to_string());
    }
    if matches!(kind, NotifierKind::Slack | NotifierKind::Teams) {
        loader.err(
            origin,
            "notifier",
            "url",
            format!(
                "a {} webhook URL carries its credential; give it as \"env:NAME\" or \"file:PATH\"",
                kind.as_str()
            ),
        );
        return None;
    }
    if !(raw.starts_with("http://") || raw.starts_with("https://")) {
        loader.err(origin, "notifier", "url", format!("{raw:?} is not an http(s) URL"));
        return None;
    }
    Some(raw.to_string())
}

fn build_notifiers(loader: &mut Loader, raw: Vec<(Origin, RawNotifier)>, senders: &[String]) -> Vec<NotifierConfig> {
    const A: &str = "notifier";
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let names: Vec<String> = raw.iter().map(|(_, n)| n.name.clone()).collect();
    for (origin, n) in raw {
        check_name(loader, &mut seen, &origin, A, &n.name);
        let url = n.url.as_deref().and_then(|u| notifier_url(loader, &origin, n.kind, u));
        let mut secret = |key: &str, r: &Option<SecretRef>| r.as_ref().and_then(|r| loader.secret(&origin, A, key, r));
        let routing_key = secret("routing_key", &n.routing_key);
        let api_key = secret("api_key", &n.api_key);
        let hmac = secret("secret", &n.secret);
        let need = |present: bool, key: &str, loader: &mut Loader| {
            if !present {
                loader.err(&origin, A, key, format!("kind = \"{}\" needs `{key}`", n.kind.as_str()));
            }
        };
        match n.kind {
            NotifierKind::Pagerduty => need(n.routing_key.is_some(), "routing_key", loader),
            NotifierKind::Opsgenie => need(n.api_key.is_some(), "api_key", loader),
            NotifierKind::Teams | NotifierKind::Slack | NotifierKind::Webhook | NotifierKind::Alertmanager => {
                need(n.url.is_some(), "url", loader)
            }
            NotifierKind::Email => {
                need(!n.to.is_empty(), "to", loader);
                match &n.via {
                    None => need(false, "via", loader),
                    Some(v) if !senders.contains(v) => {
                        loader.err(&origin, A, "via", format!("no [[sender]] named {v:?}"))
                    }
                    Some(_) => {}
                }
                for t in &n.to {
                    if t.parse::<lettre::Address>().is_err() {
                        loader.err(&origin, A, "to", format!("invalid address {t:?}"));
                    }
                }
            }
        }
        match &n.fallback {
            Some(f) if f == &n.name => loader.err(&origin, A, "fallback", "a notifier cannot be its own fallback"),
            Some(f) if !names.contains(f) => loader.err(&origin, A, "fallback", format!("no [[notifier]] named {f:?}")),
            _ => {}
        }
        out.push(NotifierConfig {
            name: n.name,
            kind: n.kind,
            url,
            routing_key,
            api_key,
            secret: hmac,
            via: n.via,
            to: n.to,
            fallback: n.fallback,
            timeout: n
                .timeout
                .map(HumanDuration::as_duration)
                .unwrap_or(Duration::from_secs(10)),
        });
    }
    out
}

fn check_notify_list(loader: &mut Loader, origin: &Origin, array: &str, list: &[String], notifiers: &[String]) {
    for n in list {
        if !notifiers.contains(n) {
            loader.err(origin, array, "notify", format!("no [[notifier]] named {n:?}"));
        }
    }
}

fn build_owners(loader: &mut Loader, raw: Vec<(Origin, RawOwner)>, notifiers: &[String]) -> Vec<(String, Vec<String>)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (origin, o) in raw {
        if !seen.insert(o.name.clone()) {
            loader.err(
                &origin,
                "owner",
                "name",
                format!("owner {:?} is already defined", o.name),
            );
        }
        check_notify_list(loader, &origin, "owner", &o.notify, notifiers);
        out.push((o.name, o.notify));
    }
    out
}

fn parse_time(s: &str) -> Result<crate::verdict::Millis, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("invalid time {s:?}: {e} (use RFC 3339, e.g. \"2026-11-23T06:00:00+01:00\")"))
}

fn build_silences(loader: &mut Loader, raw: Vec<(Origin, RawSilence)>, channels: &[Channel]) -> Vec<Silence> {
    const A: &str = "silence";
    let mut out = Vec::new();
    for (origin, r) in raw {
        match (&r.channel, &r.owner) {
            (None, None) | (Some(_), Some(_)) => loader.err(
                &origin,
                A,
                "channel",
                "a silence names exactly one of `channel` or `owner`",
            ),
            (Some(c), None) if !channels.iter().any(|ch| &ch.id == c) => {
                loader.err(&origin, A, "channel", format!("no channel with id {c:?}"))
            }
            (None, Some(o)) if !channels.iter().any(|ch| &ch.owner == o) => {
                loader.err(&origin, A, "owner", format!("no channel has owner {o:?}"))
            }
            _ => {}
        }
        let until = parse_time(&r.until)
            .map_err(|m| loader.err(&origin, A, "until", m))
            .ok();
        let from = match &r.from {
            Some(f) => match parse_time(f) {
                Ok(t) => Some(t),
                Err(m) => {
                    loader.err(&origin, A, "from", m);
                    None
                }
            },
            None => None,
        };
        if let Some(until) = until {
            out.push(Silence {
                channel: r.channel,
                owner: r.owner,
                from,
                until,
                reason: r.reason,
            });
        }
    }
    out
}

fn build_server(loader: &mut Loader, raw: Option<RawServer>) -> Option<ServerConfig> {
    let raw = raw?;
    let base = base_dir(&loader.files[0].path);
    let err = |loader: &mut Loader, key: &str, msg: String| {
        let line = loader.files[0].table_key_line("server", key);
        let e = loader.files[0].error(line, Some(&format!("server.{key}")), msg);
        loader.errors.push(e);
    };
    let listen: Option<std::net::SocketAddr> = match raw.listen.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            err(
                loader,
                "listen",
                format!("{:?} is not an address:port such as \"127.0.0.1:8080\"", raw.listen),
            );
            None
        }
    };
    let mut tokens = Vec::new();
    for r in &raw.bearer_tokens {
        match loader.resolve(r, &base) {
            Ok(s) => tokens.push(s),
            Err(m) => err(loader, "bearer_tokens", m),
        }
    }
    let basic = match (&raw.basic_user, &raw.basic_password) {
        (Some(u), Some(p)) => match loader.resolve(p, &base) {
            Ok(s) => Some((u.clone(), s)),
            Err(m) => {
                err(loader, "basic_password", m);
                None
            }
        },
        (None, None) => None,
        _ => {
            err(
                loader,
                "basic_user",
                "basic_user and basic_password must be given together".into(),
            );
            None
        }
    };
    let cfg = ServerConfig {
        listen: listen?,
        language: raw.language.unwrap_or(Language::En),
        title: raw.title.unwrap_or_else(|| "postcanary".into()),
        bearer_tokens: tokens,
        basic,
        public_healthz: raw.public_healthz.unwrap_or(true),
        public_metrics: raw.public_metrics.unwrap_or(false),
    };
    if !cfg.listen.ip().is_loopback() && !cfg.has_auth() {
        err(
            loader,
            "listen",
            format!(
                "the status page on {} would be open to anyone: set bearer_tokens or basic_user/basic_password",
                cfg.listen
            ),
        );
    }
    Some(cfg)
}

fn build_heartbeat(loader: &mut Loader, raw: Option<RawHeartbeat>) -> Option<HeartbeatConfig> {
    let raw = raw?;
    let base = base_dir(&loader.files[0].path);
    let url = match loader.resolve(&raw.url, &base) {
        Ok(u) => u,
        Err(m) => {
            let line = loader.files[0].table_key_line("heartbeat", "url");
            let e = loader.files[0].error(line, Some("heartbeat.url"), m);
            loader.errors.push(e);
            return None;
        }
    };
    let post = match raw.method.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("get") => false,
        Some("post") => true,
        Some(other) => {
            let line = loader.files[0].table_key_line("heartbeat", "method");
            let e = loader.files[0].error(
                line,
                Some("heartbeat.method"),
                format!("method {other:?}: use \"get\" or \"post\""),
            );
            loader.errors.push(e);
            false
        }
    };
    let interval = raw
        .interval
        .map(HumanDuration::as_duration)
        .unwrap_or(Duration::from_secs(60));
    Some(HeartbeatConfig { url, interval, post })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .split('-')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// A stable offset in `[0, min(jitter, interval/2))` derived from the channel id,
/// so channels sharing a schedule spread out and keep their phase across restarts.
pub fn jitter_offset(id: &str, jitter: Duration, interval: Duration) -> Duration {
    let cap = jitter.min(interval / 2).as_millis() as u64;
    if cap == 0 {
        return Duration::ZERO;
    }
    let digest = Sha256::digest(id.as_bytes());
    let mut n = [0u8; 8];
    n.copy_from_slice(&digest[..8]);
    Duration::from_millis(u64::from_be_bytes(n) % cap)
}

fn build_channels(
    loader: &mut Loader,
    raw: Vec<(Origin, RawChannel)>,
    names: &Names,
    defaults: &ChannelDefaults,
) -> Vec<Channel> {
    let (senders, inboxes) = (names.senders, names.inboxes);
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (origin, mut c) in raw {
        const A: &str = "channel";
        if !valid_id(&c.id) {
            loader.err(
                &origin,
                A,
                "id",
                format!("id {:?} must be kebab-case (a-z, 0-9, -), at most 64 characters", c.id),
            );
        } else if !seen.insert(c.id.clone()) {
            loader.err(&origin, A, "id", format!("channel id {:?} is already defined", c.id));
        }
        let expect = c.expect.unwrap_or(Expect::Deliver);
        if c.kind != RawChannelKind::Form && !c.step.is_empty() {
            loader.err(&origin, A, "kind", "[[channel.step]] is for kind = \"form\"");
        }
        let kind = match c.kind {
            RawChannelKind::Form => {
                for (key, set) in [("to", c.to.is_some()), ("via", c.via.is_some())] {
                    if set {
                        loader.err(
                            &origin,
                            A,
                            key,
                            format!("`{key}` is for mail channels; a form is reached by its steps"),
                        );
                    }
                }
                if expect == Expect::Bounce {
                    loader.err(
                        &origin,
                        A,
                        "expect",
                        "a form cannot bounce: use deliver, forward or handoff",
                    );
                }
                let steps = std::mem::take(&mut c.step);
                form::build_steps(loader, &origin, steps, names.logins, expect == Expect::Handoff)
                    .map(|steps| ChannelKind::Form { steps })
            }
            RawChannelKind::Mail => {
                if expect == Expect::Handoff {
                    loader.err(
                        &origin,
                        A,
                        "expect",
                        "expect = \"handoff\" is for form channels with a login",
                    );
                }
                let to = match &c.to {
                    None => {
                        loader.err(&origin, A, "to", "kind = \"mail\" needs `to`, the address to probe");
                        None
                    }
                    Some(to) => match to.parse::<lettre::Address>() {
                        Ok(a) => Some(a),
                        Err(e) => {
                            loader.err(&origin, A, "to", format!("invalid address {to:?}: {e}"));
                            None
                        }
                    },
                };
                let via = match &c.via {
                    None => match senders {
                        [only] => Some(only.clone()),
                        _ => {
                            loader.err(
                                &origin,
                                A,
                                "via",
                                "kind = \"mail\" needs `via`, the name of a [[sender]]",
                            );
                            None
                        }
                    },
                    Some(v) if senders.contains(v) => Some(v.clone()),
                    Some(v) => {
                        loader.err(&origin, A, "via", format!("no [[sender]] named {v:?}"));
                        None
                    }
                };
                to.zip(via).map(|(to, via)| ChannelKind::Mail { to, via })
            }
        };
        match (&c.inbox, expect) {
            (Some(name), _) if !inboxes.contains(name) => {
                loader.err(&origin, A, "inbox", format!("no [[inbox]] named {name:?}"));
            }
            (None, Expect::Deliver | Expect::Forward) => {
                loader.err(
                    &origin,
                    A,
                    "inbox",
                    format!(
                        "expect = \"{}\" needs `inbox`, the [[inbox]] it must land in",
                        expect.as_str()
                    ),
                );
            }
            _ => {}
        }
        let deadline = c.deadline.map(HumanDuration::as_duration).unwrap_or(defaults.deadline);
        if deadline.is_zero() {
            loader.err(&origin, A, "deadline", "deadline must be longer than zero");
        }
        let schedule = c.schedule.unwrap_or_else(|| defaults.schedule.clone());
        let jitter_offset = jitter_offset(&c.id, defaults.jitter, schedule.nominal_interval());
        let owner = c.owner.unwrap_or_else(|| defaults.owner.clone());
        if let Some(list) = &c.notify {
            check_notify_list(loader, &origin, A, list, &defaults.notifiers);
        }
        let notify = c
            .notify
            .or_else(|| {
                defaults
                    .owner_routes
                    .iter()
                    .find(|(o, _)| o == &owner)
                    .map(|(_, n)| n.clone())
            })
            .unwrap_or_else(|| defaults.notify.clone());
        let control = c.control.unwrap_or(false);
        if control && expect != Expect::Deliver {
            loader.err(&origin, A, "control", "a control channel must expect = \"deliver\"");
        }
        if let Some(kind) = kind {
            out.push(Channel {
                notify,
                control,
                id: c.id,
                name: c.name,
                owner,
                kind,
                expect,
                inbox: c.inbox,
                schedule,
                deadline,
                jitter_offset,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
