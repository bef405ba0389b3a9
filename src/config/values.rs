//! Value types that appear in the config: durations, schedules, secret
//! references and the small enums. Each one parses from a string and reports
//! a message that says what was expected; the caller adds file, line and key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Local, TimeZone, Utc};
use serde::de::{self, Deserializer};
use serde::Deserialize;

/// Implements `Deserialize` through `FromStr` for a type whose config form is
/// a string; the `FromStr` error becomes the serde message.
macro_rules! deserialize_from_str {
    ($ty:ty, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$ty, E> {
                        s.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

/// A duration written as `90s`, `15m`, `2h`, `1d`, `500ms` or a sum such as `1h30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn as_duration(self) -> Duration {
        self.0
    }
}

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(HumanDuration)
    }
}
deserialize_from_str!(HumanDuration, "a duration such as \"90s\", \"15m\" or \"2h\"");

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

/// Parses `90s`, `15m`, `2h`, `1d`, `1w`, `250ms` and sums like `1h30m`.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration {input:?}: expected a number followed by ms, s, m, h, d or w (e.g. \"90s\", \"15m\", \"2h\")"
        )
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u128 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u128 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = total
            .checked_add(n.checked_mul(unit_ms).ok_or_else(bad)?)
            .ok_or_else(bad)?;
    }
    let ms = u64::try_from(total).map_err(|_| bad())?;
    if ms > 10 * 365 * 86_400_000 {
        return Err(format!("duration {input:?} is longer than ten years"));
    }
    Ok(Duration::from_millis(ms))
}

/// Formats a duration in the largest whole units, e.g. `15m`, `1h30m`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// When a channel is probed: a cron expression (5 fields, local time, as in
/// crontab) or `every <duration>`.
#[derive(Clone, Debug)]
pub enum Schedule {
    Every(Duration),
    Cron { expr: String, cron: Box<croner::Cron> },
}

impl FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("every ") {
            let d = parse_duration(rest)?;
            if d < Duration::from_secs(1) {
                return Err(format!("schedule {s:?} is shorter than one second"));
            }
            return Ok(Schedule::Every(d));
        }
        let fields = s.split_whitespace().count();
        if fields != 5 && !s.starts_with('@') {
            return Err(format!(
                "invalid schedule {s:?}: expected a 5-field cron expression (\"*/10 * * * *\") or \"every 10m\""
            ));
        }
        let cron = croner::Cron::from_str(s).map_err(|e| format!("invalid cron expression {s:?}: {e}"))?;
        // A pattern that never fires (e.g. 30 February) is almost certainly a mistake.
        if cron.find_next_occurrence(&Local::now(), false).is_err() {
            return Err(format!("cron expression {s:?} never fires"));
        }
        Ok(Schedule::Cron {
            expr: s.to_string(),
            cron: Box::new(cron),
        })
    }
}
deserialize_from_str!(Schedule, "a cron expression or \"every <duration>\"");

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "every {}", format_duration(*d)),
            Schedule::Cron { expr, .. } => f.write_str(expr),
        }
    }
}

impl Schedule {
    /// The first firing strictly after `after`, shifted by the channel's fixed
    /// jitter `offset` so that channels sharing a schedule do not fire together.
    /// `every` schedules are aligned to multiples of the interval since the Unix
    /// epoch, so a restart keeps each channel's phase.
    pub fn next_after(&self, after: DateTime<Utc>, offset: Duration) -> Option<DateTime<Utc>> {
        let offset_ms = i64::try_from(offset.as_millis()).ok()?;
        match self {
            Schedule::Every(interval) => {
                let iv = i64::try_from(interval.as_millis()).ok()?.max(1);
                let t = after.timestamp_millis() - offset_ms;
                let next = (t.div_euclid(iv) + 1) * iv + offset_ms;
                Utc.timestamp_millis_opt(next).single()
            }
            Schedule::Cron { cron, .. } => {
                let base = (after - chrono::Duration::milliseconds(offset_ms)).with_timezone(&Local);
                let next = cron.find_next_occurrence(&base, false).ok()?;
                Some(next.with_timezone(&Utc) + chrono::Duration::milliseconds(offset_ms))
            }
        }
    }

    /// The nominal interval, used to bound the jitter; cron schedules use the
    /// gap between their next two firings.
    pub fn nominal_interval(&self) -> Duration {
        match self {
            Schedule::Every(d) => *d,
            Schedule::Cron { cron, .. } => {
                let now = Local::now();
                let a = cron.find_next_occurrence(&now, false).ok();
                let b = a.and_then(|a| cron.find_next_occurrence(&a, false).ok());
                match (a, b) {
                    (Some(a), Some(b)) => (b - a).to_std().unwrap_or(Duration::from_secs(60)),
                    _ => Duration::from_secs(60),
                }
            }
        }
    }
}

/// A reference to a secret: `env:NAME` or `file:PATH`. Inline values are refused
/// so that config files can live in git.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl FromStr for SecretRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(name) = s.strip_prefix("env:") {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err("secret reference `env:` needs a variable name of letters, digits and _".into());
            }
            Ok(SecretRef::Env(name.to_string()))
        } else if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err("secret reference `file:` needs a path".into());
            }
            Ok(SecretRef::File(PathBuf::from(path)))
        } else {
            // Never echo the value: it may be a pasted password.
            Err("secrets must be given as \"env:NAME\" or \"file:PATH\", never inline".into())
        }
    }
}
deserialize_from_str!(SecretRef, "a secret reference \"env:NAME\" or \"file:PATH\"");

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

impl SecretRef {
    /// Reads the secret. Relative `file:` paths are taken from `base_dir` (the
    /// directory of the config file that named them). Errors name the source,
    /// never the value.
    pub fn resolve(&self, base_dir: &Path) -> Result<Secret, String> {
        match self {
            SecretRef::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(Secret(v)),
                Ok(_) => Err(format!("environment variable {name} is empty")),
                Err(_) => Err(format!("environment variable {name} is not set")),
            },
            SecretRef::File(path) => {
                let full = if path.is_absolute() {
                    path.clone()
                } else {
                    base_dir.join(path)
                };
                let text = std::fs::read_to_string(&full)
                    .map_err(|e| format!("cannot read secret file {}: {e}", full.display()))?;
                let v = text.trim_end_matches(['\r', '\n']).to_string();
                if v.is_empty() {
                    return Err(format!("secret file {} is empty", full.display()));
                }
                Ok(Secret(v))
            }
        }
    }
}

/// A resolved secret. It has no `Display`, and `Debug` prints `***`, so it
/// cannot end up in a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Transport security of a connection to a relay or a mail server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    /// TLS from the first byte (SMTPS 465, IMAPS 993).
    Tls,
    /// Plain connection upgraded with STARTTLS, which is required.
    Starttls,
    /// No encryption. Accepted only for loopback hosts.
    None,
}

/// What to do with a probe message once its token has been confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterConfirm {
    Keep,
    Delete,
    Move(String),
}

impl FromStr for AfterConfirm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "keep" => Ok(AfterConfirm::Keep),
            "delete" => Ok(AfterConfirm::Delete),
            _ => match s.strip_prefix("move:") {
                Some(folder) if !folder.trim().is_empty() => Ok(AfterConfirm::Move(folder.to_string())),
                _ => Err(format!(
                    "invalid after_confirm {s:?}: expected \"keep\", \"delete\" or \"move:FOLDER\""
                )),
            },
        }
    }
}
deserialize_from_str!(AfterConfirm, "\"keep\", \"delete\" or \"move:FOLDER\"");

/// True for `localhost` and loopback addresses (127.0.0.0/8, ::1).
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        for bad in ["", "15", "m", "15x", "1.5h", "-3m", "15 m", "99999999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn durations_format_round_trip() {
        for s in ["15m", "1h30m", "250ms", "2d", "90s"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }

    #[test]
    fn every_schedule_is_aligned_and_offset() {
        let s: Schedule = "every 10m".parse().unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 12, 3, 0).unwrap();
        let next = s.next_after(t, Duration::ZERO).unwrap();
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 1, 1, 12, 10, 0).unwrap());
        let next = s.next_after(t, Duration::from_secs(30)).unwrap();
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 1, 1, 12, 10, 30).unwrap());
        // Strictly after: a firing time itself yields the following one.
        let again = s.next_after(next, Duration::from_secs(30)).unwrap();
        assert_eq!(again, Utc.with_ymd_and_hms(2026, 1, 1, 12, 20, 30).unwrap());
    }

    #[test]
    fn cron_schedule_fires_on_the_minute_plus_offset() {
        let s: Schedule = "*/10 * * * *".parse().unwrap();
        let t = Utc::now();
        let next = s.next_after(t, Duration::from_secs(7)).unwrap();
        assert!(next > t);
        assert_eq!(next.timestamp() % 60, 7);
        assert!(matches!(s.nominal_interval().as_secs(), 600));
    }

    #[test]
    fn bad_schedules_are_refused() {
        for bad in [
            "every",
            "every 0s",
            "every soon",
            "*/10 * * *",
            "61 * * * *",
            "* * 31 2 *",
            "hourly",
        ] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn secret_refs_never_inline() {
        assert_eq!("env:PW".parse::<SecretRef>(), Ok(SecretRef::Env("PW".into())));
        assert_eq!(
            "file:/run/pw".parse::<SecretRef>(),
            Ok(SecretRef::File("/run/pw".into()))
        );
        let err = "hunter2".parse::<SecretRef>().unwrap_err();
        assert!(!err.contains("hunter2"));
        assert!("env:".parse::<SecretRef>().is_err());
        assert!("env:A-B".parse::<SecretRef>().is_err());
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
    }

    #[test]
    fn secret_file_is_trimmed_and_relative_to_base() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let s = SecretRef::File("pw".into()).resolve(dir.path()).unwrap();
        assert_eq!(s.expose(), "s3cret");
        let err = SecretRef::Env("POSTCANARY_SURELY_UNSET_VAR".into())
            .resolve(dir.path())
            .unwrap_err();
        assert!(err.contains("POSTCANARY_SURELY_UNSET_VAR"));
    }

    #[test]
    fn after_confirm_forms() {
        assert_eq!("keep".parse::<AfterConfirm>(), Ok(AfterConfirm::Keep));
        assert_eq!("delete".parse::<AfterConfirm>(), Ok(AfterConfirm::Delete));
        assert_eq!(
            "move:Postcanary".parse::<AfterConfirm>(),
            Ok(AfterConfirm::Move("Postcanary".into()))
        );
        assert!("move:".parse::<AfterConfirm>().is_err());
        assert!("archive".parse::<AfterConfirm>().is_err());
    }

    #[test]
    fn loopback_hosts() {
        for h in ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["10.0.0.1", "smtp.example.net", "0.0.0.0"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
