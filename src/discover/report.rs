//! The discovery report: what was found, how it compares with the
//! configured channels, the look-alikes, the RCPT answers; and its three
//! renderings (table, JSON through serde, `[[channel]]` stubs).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;
use url::Url;

use super::crawl::{Crawl, FoundForm, Source};
use super::lookalike;
use crate::config::{form::Action, ChannelKind, Config, Expect, SenderConfig};

#[derive(Debug, Serialize)]
pub struct Report {
    pub sites: Vec<String>,
    pub requests: usize,
    pub pages: usize,
    pub documents: usize,
    pub bytes: u64,
    pub robots_excluded: usize,
    pub limited: usize,
    /// Whether the report was compared with a config.
    pub compared: bool,
    pub addresses: Vec<AddressEntry>,
    pub forms: Vec<FormEntry>,
    /// Configured mail channels whose address no crawled page publishes any more.
    pub no_longer_published: Vec<Probed>,
    pub lookalikes: Vec<Lookalike>,
    pub login_links: BTreeMap<String, Vec<String>>,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct AddressEntry {
    pub address: String,
    /// Pages and documents that publish it (empty for a probed address found nowhere).
    pub found_on: Vec<Source>,
    /// Channels that probe it, with their expectation.
    pub probed_by: Vec<Probed>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcpt: Option<Rcpt>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Probed {
    pub channel: String,
    pub target: String,
    pub expect: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rcpt {
    /// `accepted`, `refused` or `unknown`.
    pub answer: String,
    pub reply: String,
}

#[derive(Debug, Serialize)]
pub struct FormEntry {
    #[serde(flatten)]
    pub form: FoundForm,
    pub probed_by: Vec<Probed>,
}

#[derive(Debug, Serialize)]
pub struct Lookalike {
    pub address: String,
    pub resembles: String,
    pub distance: usize,
    /// Whether `address` is probed as `bounce` or `forward` already.
    pub covered: bool,
    /// What to do about it.
    pub advice: String,
}

fn canon_url(s: &str) -> String {
    match Url::parse(s) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            u.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => s.trim_end_matches('/').to_string(),
    }
}

fn site_domains(sites: &[Url]) -> Vec<String> {
    sites
        .iter()
        .filter_map(|u| u.host_str())
        .map(|h| h.trim_start_matches("www.").to_ascii_lowercase())
        .collect()
}

impl Report {
    pub fn build(sites: &[Url], crawl: Crawl, config: Option<&Config>) -> Report {
        let mut probed: BTreeMap<String, Vec<Probed>> = BTreeMap::new();
        let mut form_channels: Vec<(Vec<String>, Probed)> = Vec::new();
        for c in config.map(|c| c.channels.as_slice()).unwrap_or_default() {
            let p = Probed {
                channel: c.id.clone(),
                target: c.kind.target(),
                expect: c.expect.as_str().to_string(),
            };
            match &c.kind {
                ChannelKind::Mail { to, .. } => probed.entry(to.to_string().to_lowercase()).or_default().push(p),
                ChannelKind::Form { steps } => {
                    let urls = steps
                        .iter()
                        .filter_map(|s| match &s.action {
                            Action::Get(t) | Action::Post(t) if !t.0.contains("{{") => Some(canon_url(&t.0)),
                            _ => None,
                        })
                        .collect();
                    form_channels.push((urls, p));
                }
            }
        }
        let domains = site_domains(sites);
        let published_domains: BTreeSet<String> = crawl
            .addresses
            .keys()
            .filter_map(|a| a.rsplit_once('@').map(|(_, d)| d.to_string()))
            .collect();
        let in_scope = |addr: &str| {
            let d = addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            published_domains.contains(d) || domains.iter().any(|s| s == d || s.ends_with(&format!(".{d}")))
        };
        let mut addresses: Vec<AddressEntry> = crawl
            .addresses
            .iter()
            .map(|(a, found)| AddressEntry {
                address: a.clone(),
                found_on: found.clone(),
                probed_by: probed.get(a).cloned().unwrap_or_default(),
                rcpt: None,
            })
            .collect();
        let mut no_longer_published = Vec::new();
        for (a, ps) in &probed {
            if !crawl.addresses.contains_key(a) && in_scope(a) {
                no_longer_published.extend(ps.iter().cloned());
                addresses.push(AddressEntry {
                    address: a.clone(),
                    found_on: Vec::new(),
                    probed_by: ps.clone(),
                    rcpt: None,
                });
            }
        }
        addresses.sort_by(|a, b| a.address.cmp(&b.address));
        let all: Vec<String> = addresses.iter().map(|a| a.address.clone()).collect();
        let mut lookalikes = Vec::new();
        for (a, b, d) in lookalike::pairs(&all) {
            // Each side is a look-alike of the other; say it for each side
            // that is not already probed as one.
            for (x, y) in [(&a, &b), (&b, &a)] {
                let entry = addresses.iter().find(|e| &e.address == x);
                let ps = entry.map(|e| e.probed_by.clone()).unwrap_or_default();
                let covered = ps
                    .iter()
                    .any(|p| p.expect == Expect::Bounce.as_str() || p.expect == Expect::Forward.as_str());
                let delivers = |e: Option<&AddressEntry>| {
                    e.is_some_and(|e| e.probed_by.iter().any(|p| p.expect == Expect::Deliver.as_str()))
                };
                let twin = addresses.iter().find(|e| &e.address == y);
                if delivers(entry) && !delivers(twin) {
                    continue; // the real, probed address; its twin carries the finding
                }
                let advice = if covered {
                    "probed as bounce/forward".to_string()
                } else if ps.is_empty() {
                    format!("not probed: add a channel with expect = \"bounce\" (or \"forward\" to {y})")
                } else {
                    format!("probed as deliver: make sure it is meant to receive mail, else expect = \"bounce\" (or \"forward\" to {y})")
                };
                lookalikes.push(Lookalike {
                    address: x.clone(),
                    resembles: y.clone(),
                    distance: d,
                    covered,
                    advice,
                });
            }
        }
        let forms = crawl
            .forms
            .into_iter()
            .map(|f| {
                let mut keys = vec![canon_url(&f.action)];
                keys.extend(f.pages.iter().map(|p| canon_url(&p.url)));
                let probed_by = form_channels
                    .iter()
                    .filter(|(urls, _)| urls.iter().any(|u| keys.contains(u)))
                    .map(|(_, p)| p.clone())
                    .collect();
                FormEntry { form: f, probed_by }
            })
            .collect();
        Report {
            sites: sites.iter().map(Url::to_string).collect(),
            requests: crawl.requests,
            pages: crawl.pages,
            documents: crawl.documents,
            bytes: crawl.bytes,
            robots_excluded: crawl.robots_excluded,
            limited: crawl.limited,
            compared: config.is_some(),
            addresses,
            forms,
            no_longer_published,
            lookalikes,
            login_links: crawl.login_links,
            notes: crawl.notes,
        }
    }

    /// Asks the MX of each domain about its addresses, through an `mx` sender.
    pub async fn rcpt_check(&mut self, sender: &SenderConfig) {
        let Some(mx) = &sender.mx else { return };
        let mut by_domain: BTreeMap<String, Vec<(usize, lettre::Address)>> = BTreeMap::new();
        for (i, e) in self.addresses.iter().enumerate() {
            if let Ok(a) = e.address.parse::<lettre::Address>() {
                by_domain.entry(a.domain().to_string()).or_default().push((i, a));
            }
        }
        for (domain, list) in by_domain {
            let addrs: Vec<lettre::Address> = list.iter().map(|(_, a)| a.clone()).collect();
            let answers = crate::sender::mx::rcpt_check(sender, mx, &domain, &addrs).await;
            for ((i, _), ans) in list.iter().zip(answers) {
                use crate::sender::mx::RcptAnswer;
                let (answer, reply) = match ans {
                    RcptAnswer::Accepted(r) => ("accepted", r),
                    RcptAnswer::Refused(r) => ("refused", r),
                    RcptAnswer::Unknown(r) => ("unknown", r),
                };
                if let Some(e) = self.addresses.get_mut(*i) {
                    e.rcpt = Some(Rcpt {
                        answer: answer.into(),
                        reply,
                    });
                }
            }
        }
        for l in &mut self.lookalikes {
            let rcpt = self
                .addresses
                .iter()
                .find(|e| e.address == l.address)
                .and_then(|e| e.rcpt.as_ref());
            match rcpt.map(|r| r.answer.as_str()) {
                Some("accepted") if !l.covered => {
                    l.advice = format!(
                        "ACCEPTED at RCPT time: mail mistyped for {} is taken; {}",
                        l.resembles, l.advice
                    )
                }
                Some("refused") => l.advice = format!("refused at RCPT time; {}", l.advice),
                _ => {}
            }
        }
    }

    /// Published but not probed: addresses and forms.
    pub fn unmonitored_addresses(&self) -> impl Iterator<Item = &AddressEntry> {
        self.addresses
            .iter()
            .filter(|a| a.probed_by.is_empty() && !a.found_on.is_empty())
    }

    pub fn unmonitored_forms(&self) -> impl Iterator<Item = &FormEntry> {
        self.forms.iter().filter(|f| f.probed_by.is_empty())
    }

    pub fn needs_action(&self) -> bool {
        self.unmonitored_addresses().next().is_some()
            || self.unmonitored_forms().next().is_some()
            || !self.no_longer_published.is_empty()
            || self.lookalikes.iter().any(|l| !l.covered)
    }

    fn status(&self, a: &AddressEntry) -> String {
        if !self.compared {
            return "-".into();
        }
        match (a.found_on.is_empty(), a.probed_by.is_empty()) {
            (false, true) => "NOT PROBED".into(),
            (true, false) => "NO LONGER PUBLISHED".into(),
            _ => {
                let ids: Vec<&str> = a.probed_by.iter().map(|p| p.channel.as_str()).collect();
                format!("probed ({})", ids.join(", "))
            }
        }
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "crawled {}: {} requests, {} pages, {} documents, {} bytes; {} URLs excluded by robots.txt, {} links left by limits",
            self.sites.join(" "),
            self.requests,
            self.pages,
            self.documents,
            self.bytes,
            self.robots_excluded,
            self.limited
        );
        let mut rows = Vec::new();
        for a in &self.addresses {
            let first = a.found_on.first();
            let more = a.found_on.len().saturating_sub(1);
            rows.push(vec![
                a.address.clone(),
                self.status(a),
                a.rcpt.as_ref().map(|r| r.answer.clone()).unwrap_or_else(|| "-".into()),
                first.map(|s| s.how.as_str().to_string()).unwrap_or_else(|| "-".into()),
                first
                    .map(|s| {
                        if more > 0 {
                            format!("{} (+{more})", s.url)
                        } else {
                            s.url.clone()
                        }
                    })
                    .unwrap_or_else(|| "-".into()),
                first
                    .and_then(|s| s.last_modified.clone())
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        out.push('\n');
        table(
            &mut out,
            &["ADDRESS", "STATUS", "RCPT", "HOW", "FOUND ON", "LAST-MODIFIED"],
            &rows,
        );
        let rows: Vec<Vec<String>> = self
            .forms
            .iter()
            .map(|f| {
                let status = if !self.compared {
                    "-".to_string()
                } else if f.probed_by.is_empty() {
                    "NOT PROBED".into()
                } else {
                    format!(
                        "probed ({})",
                        f.probed_by
                            .iter()
                            .map(|p| p.channel.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                vec![
                    f.form.method.clone(),
                    f.form.action.clone(),
                    status,
                    f.form.handoff.clone().unwrap_or_else(|| "-".into()),
                    f.form
                        .pages
                        .iter()
                        .map(|p| p.url.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                ]
            })
            .collect();
        out.push('\n');
        table(
            &mut out,
            &["METHOD", "FORM ACTION", "STATUS", "LOGIN HAND-OFF", "ON PAGES"],
            &rows,
        );
        if !self.lookalikes.is_empty() {
            out.push_str("\nLOOK-ALIKES\n");
            for l in &self.lookalikes {
                let _ = writeln!(
                    out,
                    "  {} resembles {} (distance {}): {}",
                    l.address, l.resembles, l.distance, l.advice
                );
            }
        }
        if !self.login_links.is_empty() {
            out.push_str("\nLOGIN LINKS (not followed)\n");
            for (l, pages) in &self.login_links {
                let _ = writeln!(out, "  {l} on {}", pages.join(" "));
            }
        }
        if !self.notes.is_empty() {
            out.push_str("\nNOTES\n");
            for n in &self.notes {
                let _ = writeln!(out, "  {n}");
            }
        }
        out
    }

    /// Commented `[[channel]]` stubs for every unmonitored address, look-alike and form.
    pub fn toml_stubs(&self) -> String {
        let mut out = String::from(
            "# Channels postcanary discover found unmonitored. Fill in every FILL-IN\n\
             # (`postcanary validate` refuses them until then), then include this file.\n",
        );
        let mut ids = BTreeSet::new();
        let mut id_for = |base: String| {
            let mut slug: String = base
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '-'
                    }
                })
                .collect();
            while slug.contains("--") {
                slug = slug.replace("--", "-");
            }
            let slug = slug.trim_matches('-').chars().take(60).collect::<String>();
            let mut id = slug.clone();
            let mut n = 2;
            while !ids.insert(id.clone()) {
                id = format!("{slug}-{n}");
                n += 1;
            }
            id
        };
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        for a in self.unmonitored_addresses() {
            let look = self.lookalikes.iter().find(|l| l.address == a.address);
            let _ = writeln!(out);
            for s in &a.found_on {
                let _ = writeln!(
                    out,
                    "# published on {} ({}{})",
                    s.url,
                    s.how.as_str(),
                    s.last_modified
                        .as_ref()
                        .map(|m| format!(", Last-Modified {m}"))
                        .unwrap_or_default()
                );
            }
            if let Some(r) = &a.rcpt {
                let _ = writeln!(out, "# RCPT check: {} ({})", r.answer, r.reply.replace('\n', " "));
            }
            let _ = writeln!(out, "[[channel]]");
            let _ = writeln!(out, "id = {}", q(&id_for(a.address.clone())));
            let _ = writeln!(out, "name = {}", q(&format!("{} (discovered)", a.address)));
            let _ = writeln!(out, "kind = \"mail\"");
            let _ = writeln!(out, "to = {}", q(&a.address));
            match look {
                Some(l) => {
                    let _ = writeln!(
                        out,
                        "# a look-alike of {}: it must refuse mail, or forward it there",
                        l.resembles
                    );
                    let _ = writeln!(out, "expect = \"bounce\"   # or \"forward\" with an inbox");
                }
                None => {
                    let _ = writeln!(out, "expect = \"deliver\"  # FILL-IN: deliver, forward or bounce");
                    let _ = writeln!(out, "inbox = \"FILL-IN\"   # the [[inbox]] where it must land");
                }
            }
        }
        for f in self.unmonitored_forms() {
            let _ = writeln!(out);
            for p in &f.form.pages {
                let _ = writeln!(
                    out,
                    "# form on {}{}",
                    p.url,
                    p.last_modified
                        .as_ref()
                        .map(|m| format!(" (Last-Modified {m})"))
                        .unwrap_or_default()
                );
            }
            let _ = writeln!(out, "# fields: {}", f.form.fields.join(", "));
            let page = f
                .form
                .pages
                .first()
                .map(|p| p.url.clone())
                .unwrap_or_else(|| f.form.action.clone());
            let _ = writeln!(out, "[[channel]]");
            let _ = writeln!(out, "id = {}", q(&id_for(format!("form-{}", f.form.action))));
            let _ = writeln!(out, "name = {}", q(&format!("form {} (discovered)", f.form.action)));
            let _ = writeln!(out, "kind = \"form\"");
            match &f.form.handoff {
                Some(h) => {
                    let _ = writeln!(out, "# hands off to a login: {h}");
                    let _ = writeln!(out, "expect = \"handoff\"");
                    let _ = writeln!(out, "[[channel.step]]\nget = {}", q(&page));
                    let _ = writeln!(out, "[[channel.step]]\nhandoff = \"FILL-IN\"  # the [[login]] to check");
                }
                None => {
                    let _ = writeln!(out, "inbox = \"FILL-IN\"  # where the submission must land");
                    let _ = writeln!(out, "[[channel.step]]\nget = {}", q(&page));
                    let _ = writeln!(
                        out,
                        "[[channel.step]]\nsubmit = {}",
                        q(&format!("form[action=\"{}\"]", f.form.action))
                    );
                    let _ = writeln!(
                        out,
                        "# fields = {{ FILL-IN = \"{{{{token}}}}\" }}  # the field that carries the token"
                    );
                }
            }
        }
        out
    }
}

fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}
