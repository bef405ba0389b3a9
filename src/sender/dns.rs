//! DNS for the `mx` sender and the drift watcher, over hickory-resolver:
//! the system's resolver, or one fixed server (tests, split-horizon setups).
//! Answers are not cached beyond their lookup, so a change is seen at once.
//!
//! The line that matters: "this record does not exist" (NXDOMAIN, or no
//! record of that type) is an answer — for drift, a disappearance; "no
//! answer" (timeout, SERVFAIL, refused, nothing listening) is an error, and
//! the caller must not read it as a change.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::error::{ResolveError, ResolveErrorKind};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::TokioAsyncResolver;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("{0} does not exist (NXDOMAIN)")]
    NxDomain(String),
    #[error("{0} publishes a null MX: it accepts no mail")]
    NullMx(String),
    #[error("no answer for {0}: timed out")]
    Timeout(String),
    #[error("no answer for {0}")]
    Other(String),
}

/// One MX host with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    pub preference: u16,
    /// Lowercase, without the trailing dot.
    pub host: String,
    pub addrs: Vec<IpAddr>,
}

/// The routing-relevant records of a domain.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsSnapshot {
    pub domain: String,
    /// `"10 mx1.kommune.example"`, sorted.
    pub mx: Vec<String>,
    pub spf: Option<String>,
    pub dmarc: Option<String>,
    pub mta_sts: Option<String>,
}

/// One difference between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added {
        what: &'static str,
        value: String,
    },
    Removed {
        what: &'static str,
        value: String,
    },
    Changed {
        what: &'static str,
        old: String,
        new: String,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Added { what, value } => write!(f, "{what} added: {value}"),
            Change::Removed { what, value } => write!(f, "{what} removed (was {value})"),
            Change::Changed { what, old, new } => write!(f, "{what} changed: {old} → {new}"),
        }
    }
}

impl DnsSnapshot {
    /// What changed from `self` (older) to `newer`.
    pub fn diff(&self, newer: &DnsSnapshot) -> Vec<Change> {
        let mut out = Vec::new();
        let list = |v: &[String]| format!("[{}]", v.join(", "));
        match (self.mx.is_empty(), newer.mx.is_empty()) {
            (_, _) if self.mx == newer.mx => {}
            (true, false) => out.push(Change::Added {
                what: "MX",
                value: list(&newer.mx),
            }),
            (false, true) => out.push(Change::Removed {
                what: "MX",
                value: list(&self.mx),
            }),
            _ => out.push(Change::Changed {
                what: "MX",
                old: list(&self.mx),
                new: list(&newer.mx),
            }),
        }
        for (what, old, new) in [
            ("SPF", &self.spf, &newer.spf),
            ("DMARC", &self.dmarc, &newer.dmarc),
            ("MTA-STS", &self.mta_sts, &newer.mta_sts),
        ] {
            match (old, new) {
                (a, b) if a == b => {}
                (None, Some(v)) => out.push(Change::Added { what, value: v.clone() }),
                (Some(v), None) => out.push(Change::Removed { what, value: v.clone() }),
                (Some(a), Some(b)) => out.push(Change::Changed {
                    what,
                    old: a.clone(),
                    new: b.clone(),
                }),
                (None, None) => {}
            }
        }
        out
    }
}

/// A resolver; cheap to clone.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioAsyncResolver,
}

fn options() -> ResolverOpts {
    let mut o = ResolverOpts::default();
    o.timeout = Duration::from_secs(3);
    o.attempts = 2;
    // No caching past the lookup itself: drift must see a change at once.
    o.positive_max_ttl = Some(Duration::ZERO);
    o.negative_max_ttl = Some(Duration::ZERO);
    o.use_hosts_file = false;
    o.ndots = 0;
    o
}

impl Resolver {
    /// The system's resolver (/etc/resolv.conf).
    pub fn system() -> Result<Resolver, DnsError> {
        let (config, _) = hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| DnsError::Other(format!("the system resolver configuration: {e}")))?;
        Ok(Resolver {
            inner: TokioAsyncResolver::tokio(config, options()),
        })
    }

    /// One server only, over UDP with TCP for truncated answers.
    pub fn with_nameserver(addr: SocketAddr) -> Resolver {
        let group = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
        let config = ResolverConfig::from_parts(None, Vec::new(), group);
        Resolver {
            inner: TokioAsyncResolver::tokio(config, options()),
        }
    }

    /// MX hosts in preference order, each with its addresses. No MX record:
    /// the domain itself (RFC 5321 §5.1). A null MX (RFC 7505): an error.
    pub async fn mx(&self, domain: &str) -> Result<Vec<MxHost>, DnsError> {
        let records: Vec<(u16, String)> = match self.inner.mx_lookup(fqdn(domain).as_str()).await {
            Ok(l) => l
                .iter()
                .map(|m| (m.preference(), bare(&m.exchange().to_ascii())))
                .collect(),
            Err(e) => match absent(&e, domain)? {
                Absent::NoSuchDomain => return Err(DnsError::NxDomain(domain.to_string())),
                Absent::NoRecords => Vec::new(),
            },
        };
        if records.iter().any(|(_, h)| h.is_empty()) {
            return Err(DnsError::NullMx(domain.to_string()));
        }
        let mut records = if records.is_empty() {
            vec![(0, domain.to_ascii_lowercase())]
        } else {
            records
        };
        records.sort();
        let mut out = Vec::with_capacity(records.len());
        for (preference, host) in records {
            let addrs = match self.inner.lookup_ip(fqdn(&host).as_str()).await {
                Ok(l) => l.iter().collect(),
                Err(e) => {
                    absent(&e, &host)?;
                    Vec::new()
                }
            };
            out.push(MxHost {
                preference,
                host,
                addrs,
            });
        }
        Ok(out)
    }

    /// The routing records of a domain. Missing records are `None`/empty;
    /// only a server that gives no answer is an error.
    pub async fn snapshot(&self, domain: &str) -> Result<DnsSnapshot, DnsError> {
        let domain = domain.to_ascii_lowercase();
        let mut mx: Vec<String> = match self.inner.mx_lookup(fqdn(&domain).as_str()).await {
            Ok(l) => l
                .iter()
                .map(|m| format!("{} {}", m.preference(), bare(&m.exchange().to_ascii())))
                .collect(),
            Err(e) => {
                absent(&e, &domain)?;
                Vec::new()
            }
        };
        mx.sort();
        let spf = self.txt_starting(&domain, "v=spf1").await?;
        let dmarc = self.txt_starting(&format!("_dmarc.{domain}"), "v=DMARC1").await?;
        let mta_sts = self.txt_starting(&format!("_mta-sts.{domain}"), "v=STSv1").await?;
        Ok(DnsSnapshot {
            domain,
            mx,
            spf,
            dmarc,
            mta_sts,
        })
    }

    /// The first TXT record at `name` that starts with `prefix` (character-strings joined).
    async fn txt_starting(&self, name: &str, prefix: &str) -> Result<Option<String>, DnsError> {
        match self.inner.txt_lookup(fqdn(name).as_str()).await {
            Ok(l) => {
                let mut found: Vec<String> = l
                    .iter()
                    .map(|t| {
                        t.txt_data()
                            .iter()
                            .map(|part| String::from_utf8_lossy(part).into_owned())
                            .collect::<String>()
                    })
                    .filter(|s| s.to_ascii_lowercase().starts_with(&prefix.to_ascii_lowercase()))
                    .collect();
                found.sort();
                Ok(found.into_iter().next())
            }
            Err(e) => {
                absent(&e, name)?;
                Ok(None)
            }
        }
    }
}

enum Absent {
    NoSuchDomain,
    NoRecords,
}

/// An error that is really an answer ("not there"), or a real error.
fn absent(e: &ResolveError, name: &str) -> Result<Absent, DnsError> {
    match e.kind() {
        ResolveErrorKind::NoRecordsFound { response_code, .. } => match *response_code {
            ResponseCode::NXDomain => Ok(Absent::NoSuchDomain),
            ResponseCode::NoError => Ok(Absent::NoRecords),
            other => Err(DnsError::Other(format!("{name}: the server answered {other}"))),
        },
        ResolveErrorKind::Timeout => Err(DnsError::Timeout(name.to_string())),
        _ => Err(DnsError::Other(format!("{name}: {e}"))),
    }
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// `mx.example.` → `mx.example`; the root (`.`) → empty (a null MX).
fn bare(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(mx: &[&str], dmarc: Option<&str>) -> DnsSnapshot {
        DnsSnapshot {
            domain: "kommune.example".into(),
            mx: mx.iter().map(|s| s.to_string()).collect(),
            spf: Some("v=spf1 -all".into()),
            dmarc: dmarc.map(str::to_string),
            mta_sts: None,
        }
    }

    #[test]
    fn diffs_read_as_sentences() {
        let a = snap(&["10 mx.kommune.example"], Some("v=DMARC1; p=reject"));
        assert!(a.diff(&a).is_empty());
        let b = snap(&["10 mx.closed.example"], None);
        let text: Vec<String> = a.diff(&b).iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "MX changed: [10 mx.kommune.example] → [10 mx.closed.example]",
                "DMARC removed (was v=DMARC1; p=reject)",
            ]
        );
        let c = snap(&[], Some("v=DMARC1; p=reject"));
        assert_eq!(a.diff(&c)[0].to_string(), "MX removed (was [10 mx.kommune.example])");
        assert_eq!(c.diff(&a)[0].to_string(), "MX added: [10 mx.kommune.example]");
    }

    #[test]
    fn names() {
        assert_eq!(bare("MX.Kommune.Example."), "mx.kommune.example");
        assert_eq!(bare("."), "");
        assert_eq!(fqdn("kommune.example"), "kommune.example.");
    }
}
