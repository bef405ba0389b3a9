//! What running it day to day needs from the config: who may do what on the
//! status page and API (`[[server.user]]` with a role), the page's time zone
//! (`[server] timezone`), and escalation (`[paging]` / `[[owner]]`
//! `escalate_after` and `escalate_to`).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::loader::{Loader, Origin};
use super::values::{HumanDuration, Secret, SecretRef};

/// What a credential of the status page and API may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the page and the API.
    Viewer,
    /// Also acknowledges incidents, silences channels and owners, reloads the config.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

/// One person or system that may use the status page and API.
#[derive(Clone, Debug)]
pub struct ServerUser {
    /// Shown in the audit log; also the HTTP basic user name.
    pub name: String,
    pub role: Role,
    /// `Authorization: Bearer` token.
    pub token: Option<Secret>,
    /// HTTP basic password (user name = `name`).
    pub password: Option<Secret>,
}

/// `[[server.user]]`: a named credential with a role.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServerUser {
    /// Shown in the audit log (who acknowledged, who silenced); the HTTP basic user name.
    pub(super) name: String,
    /// `viewer` reads; `operator` also acknowledges, silences and reloads.
    pub(super) role: Role,
    /// A bearer token (`env:`/`file:`).
    pub(super) token: Option<SecretRef>,
    /// An HTTP basic password (`env:`/`file:`).
    pub(super) password: Option<SecretRef>,
}

pub(super) fn build_users(loader: &mut Loader, raw: Vec<RawServerUser>, base: &Path) -> Vec<ServerUser> {
    let mut out: Vec<ServerUser> = Vec::new();
    for (i, u) in raw.into_iter().enumerate() {
        let err = |loader: &mut Loader, key: &str, msg: String| {
            let line = loader.files[0].array_key_line("server.user", i, key);
            let e = loader.files[0].error(line, Some(&format!("server.user[{}].{key}", i + 1)), msg);
            loader.errors.push(e);
        };
        if u.name.trim().is_empty() || u.name.contains(':') || u.name.chars().any(char::is_control) {
            err(
                loader,
                "name",
                format!(
                    "{:?}: a user name is not empty and has no ':' or control characters",
                    u.name
                ),
            );
        }
        if out.iter().any(|o| o.name == u.name) {
            err(loader, "name", format!("user {:?} is already defined", u.name));
        }
        if u.token.is_none() && u.password.is_none() {
            err(
                loader,
                "token",
                "a user needs a `token` or a `password` (or both)".into(),
            );
        }
        let secret = |loader: &mut Loader, key: &str, r: &Option<SecretRef>| match r {
            None => None,
            Some(r) => match loader.resolve(r, base) {
                Ok(s) => Some(s),
                Err(m) => {
                    err(loader, key, m);
                    None
                }
            },
        };
        let token = secret(loader, "token", &u.token);
        let password = secret(loader, "password", &u.password);
        out.push(ServerUser {
            name: u.name,
            role: u.role,
            token,
            password,
        });
    }
    out
}

/// An IANA time zone name (`Europe/Copenhagen`).
pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, String> {
    name.parse::<chrono_tz::Tz>()
        .map_err(|_| format!("{name:?} is not an IANA time zone name such as \"Europe/Copenhagen\""))
}

/// The system's time zone (`TZ`, else the host's setting); UTC when it cannot be told.
pub fn system_timezone() -> chrono_tz::Tz {
    let from_env = std::env::var("TZ")
        .ok()
        .map(|s| s.trim_start_matches(':').to_string())
        .and_then(|s| s.parse::<chrono_tz::Tz>().ok());
    from_env
        .or_else(|| {
            iana_time_zone::get_timezone()
                .ok()
                .and_then(|s| s.parse::<chrono_tz::Tz>().ok())
        })
        .unwrap_or(chrono_tz::UTC)
}

/// Who is paged when an incident stays unacknowledged: `to[0]` after
/// `after`, `to[1]` after twice that, and so on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    pub after: Duration,
    pub to: Vec<String>,
}

/// Escalation from `escalate_after` and `escalate_to`, both or neither.
pub(super) fn build_escalation(
    loader: &mut Loader,
    origin: Option<&Origin>,
    table: &str,
    after: Option<HumanDuration>,
    to: Option<Vec<String>>,
    notifiers: &[String],
) -> Option<Escalation> {
    let err = |loader: &mut Loader, key: &str, msg: String| match origin {
        Some(o) => loader.err(o, table, key, msg),
        None => {
            let line = loader.files[0].table_key_line(table, key);
            let e = loader.files[0].error(line, Some(&format!("{table}.{key}")), msg);
            loader.errors.push(e);
        }
    };
    match (after, to) {
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            err(
                loader,
                "escalate_after",
                "escalate_after and escalate_to must be given together".into(),
            );
            None
        }
        (Some(after), Some(to)) => {
            let after = after.as_duration();
            if after.is_zero() {
                err(
                    loader,
                    "escalate_after",
                    "escalate_after must be longer than zero".into(),
                );
                return None;
            }
            if to.is_empty() {
                err(
                    loader,
                    "escalate_to",
                    "escalate_to names at least one [[notifier]]".into(),
                );
                return None;
            }
            for n in &to {
                if !notifiers.contains(n) {
                    err(loader, "escalate_to", format!("no [[notifier]] named {n:?}"));
                }
            }
            Some(Escalation { after, to })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zones_are_iana_names() {
        assert_eq!(parse_timezone("Europe/Copenhagen"), Ok(chrono_tz::Europe::Copenhagen));
        assert!(parse_timezone("CET+1").unwrap_err().contains("IANA"));
        // Whatever the machine says, it is some zone.
        let _ = system_timezone().name();
    }
}
