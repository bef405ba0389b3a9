//! `[[channel]]` and `[defaults]`: what is probed, how often, and where it
//! must land.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::form;
use super::loader::{base_dir, check_notify_list, valid_id, Loader, Origin};
use super::retain::{build_retain, RawRetainCheck, Retain, RetainKeys};
use super::values::{HumanDuration, Schedule};
use crate::verdict::Expect;

pub(super) const DEFAULT_SCHEDULE: &str = "every 10m";
pub(super) const DEFAULT_DEADLINE: Duration = Duration::from_secs(15 * 60);
pub(super) const DEFAULT_JITTER: Duration = Duration::from_secs(60);

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
    /// Form channels: extra trust anchors for the steps' HTTPS requests.
    pub ca_file: Option<super::ca::CaFile>,
    /// What every delivered canary's path must show (`require_tls`,
    /// `require_auth`; the channel's keys, else `[defaults]`).
    pub policy: crate::compliance::Policy,
    /// Retention canaries: when and where a delivered canary is looked up
    /// again (`None`: it is not, and `after_confirm` applies as always).
    pub retain: Option<Retain>,
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

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub(super) schedule: Option<Schedule>,
    pub(super) deadline: Option<HumanDuration>,
    pub(super) jitter: Option<HumanDuration>,
    pub(super) owner: Option<String>,
    pub(super) notify: Option<Vec<String>>,
    /// Every hop after postcanary's own submission must show TLS of this
    /// version or later ("1.2", "1.3"; "none": no requirement). A hop whose
    /// header does not say is not compliant.
    pub(super) require_tls: Option<String>,
    /// The receiving gateway's Authentication-Results must say `pass` for
    /// each of these ("spf", "dkim", "dmarc", "arc").
    pub(super) require_auth: Option<Vec<String>>,
    /// The ages at which a channel's delivered canary is looked up again,
    /// for channels that name where it is kept (`archive`, `retain_check`)
    /// without their own `retain`.
    pub(super) retain: Option<Vec<HumanDuration>>,
}

#[derive(Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawChannelKind {
    Mail,
    Form,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChannel {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) owner: Option<String>,
    pub(super) kind: RawChannelKind,
    pub(super) to: Option<String>,
    pub(super) via: Option<String>,
    pub(super) expect: Option<Expect>,
    pub(super) inbox: Option<String>,
    pub(super) schedule: Option<Schedule>,
    pub(super) deadline: Option<HumanDuration>,
    pub(super) notify: Option<Vec<String>>,
    pub(super) control: Option<bool>,
    /// Form channels: a PEM file of extra CA certificates (an internal CA) for the steps' HTTPS.
    pub(super) ca_file: Option<String>,
    /// As in `[defaults]`; overrides it for this channel ("none" turns it off).
    pub(super) require_tls: Option<String>,
    /// As in `[defaults]`; overrides it for this channel (`[]` turns it off).
    pub(super) require_auth: Option<Vec<String>>,
    /// Retention canaries: look the delivered canary up again at these ages
    /// after it was found (e.g. ["1d", "7d", "30d"]); a lookup that does not
    /// find it is `lost`, one that finds it changed `altered`. `[]` turns
    /// `[defaults] retain` off. Without `archive` or `retain_check` the
    /// canary is kept in the inbox it landed in.
    pub(super) retain: Option<Vec<HumanDuration>>,
    /// Keep the delivered canary in this IMAP folder of the channel's inbox
    /// (moved there after confirmation instead of the inbox's `after_confirm`).
    pub(super) archive: Option<String>,
    /// Keep the canary in a document or case system and look it up over HTTP.
    pub(super) retain_check: Option<RawRetainCheck>,
    #[serde(default)]
    pub(super) step: Vec<form::RawStep>,
}

pub(super) struct ChannelDefaults {
    pub(super) schedule: Schedule,
    pub(super) deadline: Duration,
    pub(super) jitter: Duration,
    pub(super) owner: String,
    pub(super) notify: Vec<String>,
    pub(super) owner_routes: Vec<(String, Vec<String>)>,
    pub(super) notifiers: Vec<String>,
    pub(super) policy: crate::compliance::Policy,
    pub(super) retain: Option<Vec<HumanDuration>>,
}

/// `require_tls`: a version ("1.2", "TLSv1.3"), or "none".
pub(super) fn parse_require_tls(v: &str) -> Result<Option<crate::mailpath::TlsVersion>, String> {
    use crate::mailpath::TlsVersion;
    if v.trim().eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    match TlsVersion::parse(v) {
        Some(t) if t >= TlsVersion::Tls1_0 => Ok(Some(t)),
        _ => Err(format!(
            "require_tls = {v:?}: use a TLS version (\"1.2\", \"1.3\") or \"none\""
        )),
    }
}

/// `require_auth`: methods from spf, dkim, dmarc, arc, each once.
pub(super) fn parse_require_auth(list: &[String]) -> Result<Vec<crate::compliance::AuthMethod>, String> {
    let mut out = Vec::new();
    for m in list {
        match crate::compliance::AuthMethod::parse(m) {
            Some(a) if out.contains(&a) => return Err(format!("require_auth names {m:?} twice")),
            Some(a) => out.push(a),
            None => {
                return Err(format!(
                "require_auth: {m:?} is not a check the gateway reports; use \"spf\", \"dkim\", \"dmarc\" or \"arc\""
            ))
            }
        }
    }
    Ok(out)
}

/// The `[defaults]` policy; errors name `defaults.KEY`.
pub(super) fn build_default_policy(
    loader: &mut Loader,
    require_tls: Option<&String>,
    require_auth: Option<&Vec<String>>,
) -> crate::compliance::Policy {
    let mut policy = crate::compliance::Policy::default();
    if let Some(v) = require_tls {
        match parse_require_tls(v) {
            Ok(t) => policy.require_tls = t,
            Err(m) => {
                let line = loader.files[0].table_key_line("defaults", "require_tls");
                let e = loader.files[0].error(line, Some("defaults.require_tls"), m);
                loader.errors.push(e);
            }
        }
    }
    if let Some(list) = require_auth {
        match parse_require_auth(list) {
            Ok(a) => policy.require_auth = a,
            Err(m) => {
                let line = loader.files[0].table_key_line("defaults", "require_auth");
                let e = loader.files[0].error(line, Some("defaults.require_auth"), m);
                loader.errors.push(e);
            }
        }
    }
    policy
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

pub(super) fn build_channels(
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
                form::build_steps(
                    loader,
                    &origin,
                    steps,
                    names.logins,
                    names.step_lists,
                    expect == Expect::Handoff,
                )
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
        let ca_file = match (&c.ca_file, c.kind) {
            (None, _) => None,
            (Some(_), RawChannelKind::Mail) => {
                loader.err(
                    &origin,
                    A,
                    "ca_file",
                    "`ca_file` on a channel is for form steps; a mail channel's TLS is its sender's (set it there)",
                );
                None
            }
            (Some(p), RawChannelKind::Form) => {
                let base = base_dir(&loader.files[origin.file].path);
                match super::ca::CaFile::read(&base, p) {
                    Ok(c) => Some(c),
                    Err(m) => {
                        loader.err(&origin, A, "ca_file", m);
                        None
                    }
                }
            }
        };
        let control = c.control.unwrap_or(false);
        if control && expect != Expect::Deliver {
            loader.err(&origin, A, "control", "a control channel must expect = \"deliver\"");
        }
        let mut policy = defaults.policy.clone();
        if let Some(v) = &c.require_tls {
            match parse_require_tls(v) {
                Ok(t) => policy.require_tls = t,
                Err(m) => loader.err(&origin, A, "require_tls", m),
            }
        }
        if let Some(list) = &c.require_auth {
            match parse_require_auth(list) {
                Ok(a) => policy.require_auth = a,
                Err(m) => loader.err(&origin, A, "require_auth", m),
            }
        }
        let retain = build_retain(
            loader,
            &origin,
            RetainKeys {
                retain: c.retain.as_deref(),
                default_retain: defaults.retain.as_deref(),
                archive: c.archive.as_deref(),
                check: c.retain_check.as_ref(),
                inbox: c
                    .inbox
                    .as_deref()
                    .map(|i| (i, names.graph_inboxes.iter().any(|g| g == i))),
                expect_arrival: matches!(expect, Expect::Deliver | Expect::Forward),
            },
        );
        if let Some(kind) = kind {
            out.push(Channel {
                retain,
                policy,
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
                ca_file,
            });
        }
    }
    out
}

/// Every declared name a channel may refer to.
pub(super) struct Names<'a> {
    pub(super) senders: &'a [String],
    pub(super) inboxes: &'a [String],
    /// The inboxes of `kind = "graph"`.
    pub(super) graph_inboxes: &'a [String],
    pub(super) logins: &'a [String],
    pub(super) step_lists: &'a [form::StepList],
}
