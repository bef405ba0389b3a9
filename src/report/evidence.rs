//! `postcanary evidence INCIDENT`: the complete record of one incident, from
//! the ledger alone — its timeline, every probe from the one that opened it
//! to the one that resolved it (sent when, the server's reply and queue id,
//! deadline, verdict, where and when it was found, bounce facts, the whole
//! evidence trail), every page (to which notifier, accepted when), the
//! maintenance window that held it back, and the resolution. For a
//! retention incident (`retention:CHANNEL`) also every retention check of
//! the channel from the last `kept` before it opened to its resolution, and
//! the canaries those checks looked for.

use std::process::ExitCode;

use serde::Serialize;

use super::figures::{incident_report, IncidentFacts, IncidentReport, Period};
use super::html::{esc, opt_when, page};
use super::{dur, when};
use crate::config::Config;
use crate::ledger::{DynStore, Event, Incident, PageRecord, ProbeRecord};
use crate::verdict::{now_millis, Millis};

/// At most this many probes are listed (a channel failing for weeks on a
/// 5-minute schedule has about 300 a day); the count says when more exist.
pub const MAX_PROBES: usize = 20_000;

/// At most this many retention checks are listed for a retention incident.
pub const MAX_CHECKS: usize = 10_000;

/// `postcanary evidence` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The incident's number (as on the status page and in pages).
    pub incident: String,
    #[arg(long, value_enum, default_value_t = EvidenceFormat::Json)]
    pub format: EvidenceFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EvidenceFormat {
    Json,
    Html,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChannelFacts {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub target: String,
}

/// One probe with everything recorded about it.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeEvidence {
    #[serde(flatten)]
    pub probe: ProbeRecord,
    /// The queue id in the accepting server's reply, when it names one.
    pub queue_id: Option<String>,
    /// Delivery-status reports, delay notices and auto-replies about it, and
    /// for a `bounced` verdict the bounce's reason.
    pub bounce_facts: Vec<String>,
    /// Its whole evidence trail.
    pub events: Vec<Event>,
    /// Why it is listed: `opened`, `resolved`, `during`, or `retained` (a
    /// canary a retention check of the incident looked for).
    pub role: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Resolution {
    pub at: Millis,
    pub detail: String,
    /// The probe whose success resolved it.
    pub probe: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Evidence {
    pub generated_at: Millis,
    pub incident: Incident,
    /// The channel as configured now (`None`: not a channel, or gone from the config).
    pub channel: Option<ChannelFacts>,
    /// Times to detect / acknowledge / resolve, as in reports.
    pub figures: IncidentReport,
    pub timeline: Vec<Event>,
    pub probes: Vec<ProbeEvidence>,
    /// Probes of the incident's span that exist in the ledger beyond the listed ones.
    pub probes_not_listed: usize,
    /// For a retention incident: the channel's retention checks from the
    /// newest one that still found its canary before the incident opened
    /// (it bounds "deleted between … and …") to the resolution, by
    /// `checked_at`. Empty for other incidents.
    pub retain_checks: Vec<crate::ledger::RetainCheck>,
    pub pages: Vec<PageRecord>,
    /// Operators' acknowledgements (who, when, why), from the timeline.
    pub acknowledgements: Vec<Acknowledged>,
    /// The maintenance window or silence that held the first page back, if any.
    pub silence: Option<String>,
    /// Run-time silences of the channel or its owner that overlapped the incident.
    pub silences: Vec<crate::ledger::SilenceRecord>,
    pub resolution: Option<Resolution>,
    pub notes: Vec<String>,
}

/// One acknowledgement of the incident.
#[derive(Clone, Debug, Serialize)]
pub struct Acknowledged {
    pub at: Millis,
    /// Who acknowledged (the status page's or API's user).
    pub by: Option<String>,
    /// As the timeline records it: `acknowledged by NAME: NOTE`.
    pub detail: String,
}

pub use crate::ledger::queue_id;

fn bounce_facts(p: &ProbeRecord, events: &[Event]) -> Vec<String> {
    let mut out: Vec<String> = events
        .iter()
        .filter(|e| matches!(e.kind.as_str(), "dsn" | "dsn-delayed" | "auto-reply"))
        .map(|e| format!("{}: {}", e.kind, e.detail))
        .collect();
    if matches!(
        p.verdict,
        crate::verdict::Verdict::Bounced | crate::verdict::Verdict::ExpectedBounce
    ) {
        out.push(format!("{}: {}", p.verdict, p.detail.clone().unwrap_or_default()));
    }
    out
}

/// Gathers the evidence of incident `id`; `Ok(None)` when there is none.
pub async fn gather(store: &DynStore, config: &Config, id: i64, now: Millis) -> Result<Option<Evidence>, String> {
    let e = |e: crate::ledger::StoreError| e.to_string();
    let Some(incident) = store.incident(id).await.map_err(e)? else {
        return Ok(None);
    };
    let timeline = store.incident_events(id).await.map_err(e)?;
    let pages = store.incident_pages(id).await.map_err(e)?;
    let opener = match &incident.opened_by {
        Some(p) => store.probe(p).await.map_err(e)?,
        None => None,
    };
    let resolver = match &incident.resolved_by {
        Some(p) => store.probe(p).await.map_err(e)?,
        None => None,
    };
    let mut notes = vec![super::figures::NOTE_ACKS.to_string()];
    let retained = incident.channel.strip_prefix("retention:");
    let channel = config
        .channel(retained.unwrap_or(&incident.channel))
        .map(|c| ChannelFacts {
            id: c.id.clone(),
            name: c.name.clone(),
            owner: c.owner.clone(),
            target: c.kind.target(),
        });
    // The probes: for a channel's incident every probe of the channel from
    // the one that opened it to the one that resolved it (or until now).
    let mut listed: Vec<ProbeRecord> = Vec::new();
    let mut not_listed = 0;
    let channel_incident = opener.as_ref().is_some_and(|p| p.channel == incident.channel);
    if let (Some(first), true) = (&opener, channel_incident) {
        let end = resolver.as_ref().map(|p| p.created_at).unwrap_or(Millis::MAX);
        let span = store
            .probes_since(&incident.channel, first.created_at, MAX_PROBES + 1)
            .await
            .map_err(e)?;
        let span: Vec<ProbeRecord> = span.into_iter().filter(|p| p.created_at <= end).collect();
        if span.len() > MAX_PROBES {
            not_listed = span.len() - MAX_PROBES;
            notes.push(format!(
                "only the first {MAX_PROBES} probes of the incident are listed; more exist in the ledger"
            ));
        }
        listed = span.into_iter().take(MAX_PROBES).collect();
    } else {
        listed.extend(opener.clone());
        if incident.channel.starts_with("postcanary:") {
            notes.push(
                "postcanary's own incident: the probe that opened it and the one that resolved it are listed; \
                 the channels it affected are named in the timeline"
                    .into(),
            );
        }
    }
    if let Some(r) = &resolver {
        if !listed.iter().any(|p| p.id == r.id) {
            listed.push(r.clone());
        }
    }
    let mut retain_checks = Vec::new();
    if let Some(ch) = retained {
        let to = incident.resolved_at.unwrap_or(now);
        retain_checks = store
            .retain_span(ch, incident.opened_at, to, MAX_CHECKS + 1)
            .await
            .map_err(e)?;
        if retain_checks.len() > MAX_CHECKS {
            retain_checks.truncate(MAX_CHECKS);
            notes.push(format!(
                "only the first {MAX_CHECKS} retention checks of the incident are listed; more exist in the ledger"
            ));
        }
        // The canaries those checks looked for, each looked up once.
        let mut looked: std::collections::HashSet<&str> = listed.iter().map(|p| p.id.as_str()).collect();
        let mut found = Vec::new();
        for c in &retain_checks {
            if !looked.insert(c.probe_id.as_str()) {
                continue;
            }
            match store.probe(&c.probe_id).await.map_err(e)? {
                Some(p) => found.push(p),
                None => notes.push(format!(
                    "the canary {} of retention check {} is no longer in the ledger (pruned)",
                    c.probe_id, c.id
                )),
            }
        }
        listed.extend(found);
        notes.push(
            "a retention incident: the checks listed are the channel's from the last one that found its canary \
             before the incident opened to the resolution; a check `kept` by a later canary resolves it"
                .into(),
        );
    }
    if incident.opened_by.is_some() && opener.is_none() {
        notes.push("the probe that opened the incident is no longer in the ledger (pruned)".into());
    }
    let mut probes = Vec::with_capacity(listed.len());
    for p in listed {
        let events = store.events(&p.id).await.map_err(e)?;
        let role = if Some(&p.id) == incident.opened_by.as_ref() {
            "opened"
        } else if Some(&p.id) == incident.resolved_by.as_ref() {
            "resolved"
        } else if retained.is_some() {
            "retained"
        } else {
            "during"
        };
        probes.push(ProbeEvidence {
            queue_id: p.smtp_reply.as_deref().and_then(queue_id),
            bounce_facts: bounce_facts(&p, &events),
            events,
            role: role.into(),
            probe: p,
        });
    }
    let span = Period {
        from: incident.opened_at,
        to: incident
            .resolved_at
            .map(|t| t + 1)
            .unwrap_or(now)
            .max(incident.opened_at + 1),
        label: format!("incident {id}"),
    };
    let figures = incident_report(
        &IncidentFacts {
            incident: incident.clone(),
            first_failure: opener,
            pages: pages.clone(),
        },
        &span,
        now,
    );
    let resolution = incident.resolved_at.map(|at| Resolution {
        at,
        detail: timeline
            .iter()
            .rev()
            .find(|e| e.kind == "resolved")
            .map(|e| e.detail.clone())
            .unwrap_or_default(),
        probe: incident.resolved_by.clone(),
    });
    let acknowledgements: Vec<Acknowledged> = timeline
        .iter()
        .filter(|e| e.kind == "acknowledged")
        .map(|e| Acknowledged {
            at: e.at,
            by: e
                .detail
                .strip_prefix("acknowledged by ")
                .and_then(|r| r.split(':').next())
                .map(|b| b.trim().to_string())
                .or_else(|| incident.acknowledged_by.clone()),
            detail: e.detail.clone(),
        })
        .collect();
    let ends = incident.resolved_at.unwrap_or(now);
    let owner = config
        .channel(retained.unwrap_or(&incident.channel))
        .map(|c| c.owner.clone())
        .unwrap_or_default();
    let silences: Vec<crate::ledger::SilenceRecord> = store
        .silences(None, 10_000)
        .await
        .map_err(e)?
        .into_iter()
        .filter(|s| {
            let who = s.channel.as_deref() == Some(retained.unwrap_or(&incident.channel))
                || s.channel.as_deref() == Some(incident.channel.as_str())
                || (!owner.is_empty() && s.owner.as_deref() == Some(owner.as_str()));
            let until = s.ended_at.map_or(s.until, |e| e.min(s.until));
            who && s.from < ends && until > incident.opened_at
        })
        .collect();
    Ok(Some(Evidence {
        generated_at: now,
        silences,
        silence: incident.silenced.clone(),
        channel,
        figures,
        timeline,
        probes,
        probes_not_listed: not_listed,
        retain_checks,
        pages,
        acknowledgements,
        resolution,
        notes,
        incident,
    }))
}

/// `postcanary evidence`.
pub async fn run(config: Config, args: Args) -> ExitCode {
    let Ok(id) = args.incident.trim_start_matches('#').parse::<i64>() else {
        eprintln!("incident {:?}: give its number, such as 42", args.incident);
        return ExitCode::from(super::EXIT_USAGE);
    };
    let store = match super::open_existing(&config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(super::EXIT_FAILED);
        }
    };
    let ev = match gather(&store, &config, id, now_millis()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => {
            eprintln!("no incident {id} in the ledger");
            return ExitCode::from(super::EXIT_FAILED);
        }
        Err(e) => {
            eprintln!("cannot read the ledger: {e}");
            return ExitCode::from(super::EXIT_FAILED);
        }
    };
    let out = match args.format {
        EvidenceFormat::Json => serde_json::to_string_pretty(&ev).map_err(|e| e.to_string()),
        EvidenceFormat::Html => Ok(to_html(&ev)),
    };
    match out {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot write the evidence: {e}");
            ExitCode::from(super::EXIT_FAILED)
        }
    }
}

/// The evidence of one incident as one HTML page.
pub fn to_html(e: &Evidence) -> String {
    let i = &e.incident;
    let f = &e.figures;
    let mut b = String::new();
    let who = e
        .channel
        .as_ref()
        .map(|c| format!("{} ({}), owner {}, {}", c.name, c.id, c.owner, c.target))
        .unwrap_or_else(|| i.channel.clone());
    b.push_str(&format!(
        "<h1>Incident {} \u{2014} evidence</h1><p class=\"meta\">{} \u{00b7} made {}</p>",
        i.id,
        esc(&who),
        esc(&when(e.generated_at))
    ));
    b.push_str("<h2>Summary</h2><table><tbody>");
    let rows: Vec<(&str, String)> = vec![
        ("Channel", i.channel.clone()),
        ("Verdict", format!("{}: {}", i.verdict, i.detail)),
        ("Failures", i.failures.to_string()),
        ("First failing probe sent", when(f.started_at)),
        ("Opened", when(i.opened_at)),
        ("First page accepted", opt_when(f.first_page_accepted_at)),
        ("Time to detect", dur(f.time_to_detect_ms)),
        ("Time to acknowledge", dur(f.time_to_acknowledge_ms)),
        (
            "Resolved",
            i.resolved_at.map(when).unwrap_or_else(|| "still open".into()),
        ),
        ("Time to resolve", dur(f.time_to_resolve_ms)),
        ("Maintenance window", e.silence.clone().unwrap_or_else(|| "none".into())),
        (
            "Acknowledgements",
            match e.acknowledgements.is_empty() {
                true => "none".into(),
                false => e
                    .acknowledgements
                    .iter()
                    .map(|a| format!("{} \u{2014} {}", when(a.at), a.detail))
                    .collect::<Vec<_>>()
                    .join("; "),
            },
        ),
        (
            "Silences",
            match e.silences.is_empty() {
                true => "none".into(),
                false => e
                    .silences
                    .iter()
                    .map(|s| {
                        format!(
                            "{} silenced {} from {} until {}{}: {}",
                            s.created_by,
                            s.channel
                                .as_deref()
                                .map(|c| format!("channel {c}"))
                                .or_else(|| s.owner.as_deref().map(|o| format!("owner {o}")))
                                .unwrap_or_default(),
                            when(s.from),
                            when(s.until),
                            s.ended_at
                                .map(|t| format!(" (ended {} by {})", when(t), s.ended_by.as_deref().unwrap_or("?")))
                                .unwrap_or_default(),
                            s.reason
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            },
        ),
    ];
    for (k, v) in rows {
        b.push_str(&format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v)));
    }
    b.push_str("</tbody></table>");
    if let Some(r) = &e.resolution {
        b.push_str(&format!(
            "<h2>Resolution</h2><p>{} \u{2014} {}{}</p>",
            esc(&when(r.at)),
            esc(&r.detail),
            r.probe
                .as_ref()
                .map(|p| format!(" <span class=\"note mono\">(probe {})</span>", esc(p)))
                .unwrap_or_default()
        ));
    }
    b.push_str("<h2>Pages</h2>");
    if e.pages.is_empty() {
        b.push_str("<p class=\"note\">No page was written for this incident.</p>");
    } else {
        b.push_str("<table><thead><tr><th>#</th><th>Notifier</th><th>Event</th><th>Written</th><th>Accepted</th><th>State</th><th class=\"n\">Attempts</th><th>Last error</th></tr></thead><tbody>");
        for p in &e.pages {
            b.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                p.id,
                esc(&p.notifier),
                esc(&p.event),
                esc(&when(p.created_at)),
                esc(&opt_when(p.sent_at)),
                esc(&p.state),
                p.attempts,
                esc(p.last_error.as_deref().unwrap_or(""))
            ));
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("<h2>Timeline</h2><table><thead><tr><th>When</th><th>What</th><th>Detail</th></tr></thead><tbody>");
    for t in &e.timeline {
        b.push_str(&format!(
            "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&when(t.at)),
            esc(&t.kind),
            esc(&t.detail)
        ));
    }
    b.push_str("</tbody></table>");
    if !e.retain_checks.is_empty() {
        b.push_str(&format!(
            "<h2>Retention checks ({})</h2><table><thead><tr><th>Canary</th><th>Age</th><th>Due</th><th>Checked</th>\
             <th>Result</th><th>Detail</th><th>Content hash</th><th class=\"n\">Our faults</th></tr></thead><tbody>",
            e.retain_checks.len()
        ));
        for c in &e.retain_checks {
            let token = e
                .probes
                .iter()
                .find(|p| p.probe.id == c.probe_id)
                .map_or(c.probe_id.as_str(), |p| p.probe.token.as_str());
            b.push_str(&format!(
                "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td class=\"mono\">{}</td><td class=\"n\">{}</td></tr>",
                esc(token),
                esc(&c.age),
                esc(&when(c.due_at)),
                esc(&opt_when(c.checked_at)),
                esc(c.result.as_deref().unwrap_or(&c.state)),
                esc(c.detail.as_deref().unwrap_or("")),
                esc(c.content_hash.as_deref().unwrap_or("")),
                c.attempts
            ));
        }
        b.push_str("</tbody></table>");
    }
    b.push_str(&format!("<h2>Probes ({})</h2>", e.probes.len()));
    for p in &e.probes {
        let r = &p.probe;
        b.push_str(&format!(
            "<div class=\"probe\"><h3>{} <span class=\"note mono\">{} \u{00b7} {}</span></h3><table><tbody>",
            esc(r.verdict.as_str()),
            esc(&r.token),
            esc(&p.role)
        ));
        let found = match (&r.found_in, r.found_at) {
            (Some(inbox), Some(at)) => format!("{inbox} at {}", when(at)),
            _ => "\u{2014}".into(),
        };
        let rows: Vec<(&str, String)> = vec![
            ("Channel", r.channel.clone()),
            ("To", r.target.clone()),
            ("Created", when(r.created_at)),
            ("Sent", opt_when(r.sent_at)),
            (
                "Server reply",
                r.smtp_reply.clone().unwrap_or_else(|| "\u{2014}".into()),
            ),
            ("Queue id", p.queue_id.clone().unwrap_or_else(|| "\u{2014}".into())),
            ("Deadline", when(r.deadline)),
            ("Verdict", format!("{} at {}", r.verdict, opt_when(r.judged_at))),
            ("Detail", r.detail.clone().unwrap_or_default()),
            ("Found", found),
            ("Latency", dur(r.latency_ms)),
            (
                "Bounce facts",
                if p.bounce_facts.is_empty() {
                    "\u{2014}".into()
                } else {
                    p.bounce_facts.join("; ")
                },
            ),
        ];
        for (k, v) in rows {
            b.push_str(&format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v)));
        }
        b.push_str("</tbody></table>");
        if !p.events.is_empty() {
            b.push_str("<table><thead><tr><th>When</th><th>Evidence</th><th>Detail</th></tr></thead><tbody>");
            for ev in &p.events {
                b.push_str(&format!(
                    "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&when(ev.at)),
                    esc(&ev.kind),
                    esc(&ev.detail)
                ));
            }
            b.push_str("</tbody></table>");
        }
        b.push_str("</div>");
    }
    if !e.notes.is_empty() {
        b.push_str("<h2>Notes</h2><ul class=\"note\">");
        for n in &e.notes {
            b.push_str(&format!("<li>{}</li>", esc(n)));
        }
        b.push_str("</ul>");
    }
    page(&format!("postcanary incident {} evidence", i.id), &b)
}

#[cfg(test)]
mod tests {
    use super::queue_id;

    #[test]
    fn queue_ids_of_common_servers() {
        assert_eq!(queue_id("250 2.0.0 Ok: queued as 4XyZ12").as_deref(), Some("4XyZ12"));
        assert_eq!(
            queue_id("250 OK id=1tQ2xY-000abc-3Z").as_deref(),
            Some("1tQ2xY-000abc-3Z")
        );
        assert_eq!(
            queue_id("250 2.6.0 <a@b> [InternalId=123456789, Hostname=X] Queued mail for delivery").as_deref(),
            Some("123456789")
        );
        assert_eq!(queue_id("id=4XyZ12").as_deref(), Some("4XyZ12"), "a slimmed reply");
        assert_eq!(queue_id("250 2.0.0 Ok"), None);
        assert_eq!(queue_id("250 queued as "), None);
    }
}
