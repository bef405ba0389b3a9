//! `postcanary report` and `postcanary evidence`: what the ledger says about
//! a period (availability, incidents with their times to detect and resolve,
//! pages, watchers' blind spells) and everything about one incident. Both
//! only read the ledger, so they work without the daemon running.
//!
//! `figures.rs` computes the report from plain data (see docs/report.md for
//! every definition), `html.rs` renders it and the evidence as one
//! self-contained page, `evidence.rs` gathers one incident's record.

pub mod evidence;
pub mod figures;
pub mod html;

use std::process::ExitCode;

use clap::ValueEnum;
use serde::Serialize;

use crate::config::Config;
use crate::ledger::{day_start, DynStore, DAY_MS};
use crate::verdict::{human_ms, now_millis, Millis};
use figures::{ChannelInfo, IncidentFacts, Inputs, Period, Report};

pub(crate) const EXIT_FAILED: u8 = 1;
pub(crate) const EXIT_USAGE: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
    Html,
}

/// `postcanary report` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The last N UTC days up to now, today included (`30d`, `7d`; the
    /// default is 30d).
    #[arg(long, conflicts_with = "month")]
    pub since: Option<String>,
    /// A calendar month in UTC (`2026-11`).
    #[arg(long)]
    pub month: Option<String>,
    /// Channel id to report on (repeatable); all channels when omitted.
    #[arg(long = "channel")]
    pub channels: Vec<String>,
    /// Owner whose channels to report on (repeatable).
    #[arg(long = "owner")]
    pub owners: Vec<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// The period asked for, as of `now`.
pub fn period(since: Option<&str>, month: Option<&str>, now: Millis) -> Result<Period, String> {
    if let Some(m) = month {
        let (y, mo) = m
            .split_once('-')
            .and_then(|(y, mo)| Some((y.parse::<i32>().ok()?, mo.parse::<u32>().ok()?)))
            .ok_or_else(|| format!("--month {m:?}: expected YYYY-MM, such as 2026-11"))?;
        let first = chrono::NaiveDate::from_ymd_opt(y, mo, 1).ok_or_else(|| format!("--month {m:?}: no such month"))?;
        let next = if mo == 12 {
            chrono::NaiveDate::from_ymd_opt(y + 1, 1, 1)
        } else {
            chrono::NaiveDate::from_ymd_opt(y, mo + 1, 1)
        }
        .ok_or_else(|| format!("--month {m:?}: no such month"))?;
        let ms = |d: chrono::NaiveDate| d.and_time(chrono::NaiveTime::MIN).and_utc().timestamp_millis();
        return Ok(Period {
            from: ms(first),
            to: ms(next),
            label: format!("month {m}"),
        });
    }
    let text = since.unwrap_or("30d");
    let d = crate::config::values::parse_duration(text).map_err(|e| format!("--since {text:?}: {e}"))?;
    let days = i64::try_from(d.as_millis()).unwrap_or(i64::MAX) / DAY_MS;
    if days < 1 || d.as_millis() % (DAY_MS as u128) != 0 {
        return Err(format!("--since {text:?}: give whole days, such as 30d"));
    }
    Ok(Period {
        from: day_start(now) - (days - 1) * DAY_MS,
        to: now,
        label: format!("since {text}"),
    })
}

/// Reads what the report needs from the ledger and computes it.
pub async fn gather(
    store: &DynStore,
    config: &Config,
    channels: &[String],
    owners: &[String],
    period: Period,
    now: Millis,
) -> Result<Report, String> {
    for id in channels {
        if config.channel(id).is_none() {
            return Err(format!("{}: no channel with id {id:?}", config.path.display()));
        }
    }
    for o in owners {
        if !config.channels.iter().any(|c| c.owner == *o) {
            return Err(format!("{}: no channel has owner {o:?}", config.path.display()));
        }
    }
    let selected: Vec<ChannelInfo> = config
        .channels
        .iter()
        .filter(|c| channels.is_empty() || channels.contains(&c.id))
        .filter(|c| owners.is_empty() || owners.contains(&c.owner))
        .map(|c| ChannelInfo {
            id: c.id.clone(),
            name: c.name.clone(),
            owner: c.owner.clone(),
        })
        .collect();
    let filtered = !channels.is_empty() || !owners.is_empty();
    let ids: Vec<String> = selected.iter().map(|c| c.id.clone()).collect();
    let e = |e: crate::ledger::StoreError| e.to_string();
    let last_day = day_start(period.to - 1) + DAY_MS;
    let mut counts = store
        .daily_counts(if filtered { &ids } else { &[] }, day_start(period.from), last_day)
        .await
        .map_err(e)?;
    counts.retain(|c| ids.contains(&c.channel));
    let mut incidents = Vec::new();
    for i in store.incidents_between(period.from, period.to).await.map_err(e)? {
        let mine = ids.iter().any(|c| figures::incident_of(&i.channel, c));
        // A vantage's own incidents are listed with the vantage, whatever the filter.
        if !mine && filtered && !i.channel.starts_with("vantage:") {
            continue;
        }
        let first_failure = match &i.opened_by {
            Some(p) => store.probe(p).await.map_err(e)?,
            None => None,
        };
        let pages = store.incident_pages(i.id).await.map_err(e)?;
        incidents.push(IncidentFacts {
            incident: i,
            first_failure,
            pages,
        });
    }
    let watchers: Vec<(String, String)> = config
        .inboxes
        .iter()
        .flat_map(|i| std::iter::once(i.clone()).chain(i.junk_watcher()))
        .map(|i| (i.watcher_name(), i.name.clone()))
        .collect();
    let mut spells = store.blind_spells(period.from, period.to).await.map_err(e)?;
    if filtered {
        // Only the watchers of the selected channels' inboxes.
        let inboxes: Vec<&str> = config
            .channels
            .iter()
            .filter(|c| ids.contains(&c.id))
            .filter_map(|c| c.inbox.as_deref())
            .collect();
        spells.retain(|s| inboxes.contains(&s.inbox.as_str()));
    }
    let watchers = if filtered {
        let inboxes: Vec<&str> = config
            .channels
            .iter()
            .filter(|c| ids.contains(&c.id))
            .filter_map(|c| c.inbox.as_deref())
            .collect();
        watchers
            .into_iter()
            .filter(|(_, inbox)| inboxes.contains(&inbox.as_str()))
            .collect()
    } else {
        watchers
    };
    let retention = store.retain_counts(period.from, period.to).await.map_err(e)?;
    let vantages = store
        .vantage_counts(if filtered { &ids } else { &[] }, period.from, period.to)
        .await
        .map_err(e)?;
    Ok(figures::compute(&Inputs {
        period,
        now,
        channels: selected,
        counts,
        incidents,
        watchers,
        spells,
        other_incidents: !filtered,
        retention,
        vantages,
    }))
}

/// Opens the configured ledger for reading; a missing SQLite file is an
/// error (opening would create an empty ledger and report nothing).
pub async fn open_existing(config: &Config) -> Result<DynStore, String> {
    match &config.ledger.backend {
        crate::config::LedgerBackend::Sqlite(path) if !path.exists() => {
            return Err(format!("no ledger at {} (see [ledger] url)", path.display()));
        }
        _ => {}
    }
    crate::ledger::backend::open(&config.ledger.backend)
        .await
        .map_err(|e| format!("cannot open the ledger: {e}"))
}

/// `postcanary report`.
pub async fn run(config: Config, args: Args) -> ExitCode {
    let now = now_millis();
    let period = match period(args.since.as_deref(), args.month.as_deref(), now) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let store = match open_existing(&config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let report = match gather(&store, &config, &args.channels, &args.owners, period, now).await {
        Ok(r) => r,
        Err(e) if e.starts_with("ledger:") => {
            eprintln!("cannot read the ledger: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let out = match args.format {
        Format::Table => Ok(table(&report)),
        Format::Json => serde_json::to_string_pretty(&report).map_err(|e| e.to_string()),
        Format::Csv => csv(&report),
        Format::Html => Ok(html::report(&report)),
    };
    match out {
        Ok(text) => {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot write the report: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// A time as `2026-11-22 10:00:00Z` (UTC, to the second).
pub fn when(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// A duration for people, `—` when unknown.
pub fn dur(ms: Option<i64>) -> String {
    ms.map(human_ms).unwrap_or_else(|| "\u{2014}".into())
}

/// A percentage with two decimals, `—` without probes.
pub fn pct(p: Option<f64>) -> String {
    p.map(|p| format!("{p:.2}%")).unwrap_or_else(|| "\u{2014}".into())
}

fn columns(header: &[&str], rows: &[Vec<String>], out: &mut String) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (cell, w) in cells.iter().zip(&widths) {
            s.push_str(cell);
            s.push_str(&" ".repeat(w.saturating_sub(cell.chars().count()) + 2));
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn period_line(r: &Report) -> String {
    format!(
        "postcanary report, {}: {} \u{2192} {} (UTC), made {}\n",
        r.period.label,
        when(r.period.from),
        when(r.period.to),
        when(r.generated_at)
    )
}

/// The human table.
pub fn table(r: &Report) -> String {
    let mut out = period_line(r);
    out.push('\n');
    let rows: Vec<Vec<String>> = r
        .channels
        .iter()
        .map(|c| {
            let s = &c.summary;
            vec![
                c.id.clone(),
                c.owner.clone(),
                pct(s.availability.percent),
                format!("{}/{}", s.availability.successful, s.availability.judged),
                s.availability.pending.to_string(),
                s.incidents_opened.to_string(),
                s.compliance_findings.to_string(),
                s.pages_sent.to_string(),
                dur(s.mean_time_to_detect_ms),
                dur(s.mean_time_to_acknowledge_ms),
                dur(s.mean_time_to_resolve_ms),
            ]
        })
        .collect();
    columns(
        &[
            "CHANNEL",
            "OWNER",
            "AVAIL",
            "OK/JUDGED",
            "PENDING",
            "INCIDENTS",
            "COMPLIANCE",
            "PAGES",
            "MTTD",
            "MTTA",
            "MTTR",
        ],
        &rows,
        &mut out,
    );
    out.push('\n');
    let rows: Vec<Vec<String>> = r
        .owners
        .iter()
        .map(|o| {
            let s = &o.summary;
            vec![
                o.owner.clone(),
                o.channels.len().to_string(),
                pct(s.availability.percent),
                format!("{}/{}", s.availability.successful, s.availability.judged),
                s.incidents_opened.to_string(),
                s.pages_sent.to_string(),
                dur(s.mean_time_to_detect_ms),
                dur(s.mean_time_to_acknowledge_ms),
                dur(s.mean_time_to_resolve_ms),
            ]
        })
        .collect();
    columns(
        &[
            "OWNER",
            "CHANNELS",
            "AVAIL",
            "OK/JUDGED",
            "INCIDENTS",
            "PAGES",
            "MTTD",
            "MTTA",
            "MTTR",
        ],
        &rows,
        &mut out,
    );
    // Vantage points: each one's probes, then each channel's per vantage.
    if !r.vantages.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = r
            .vantages
            .iter()
            .map(|v| {
                let a = &v.availability;
                vec![
                    v.vantage.clone(),
                    pct(a.percent),
                    format!("{}/{}", a.successful, a.judged),
                    a.errors.to_string(),
                    a.pending.to_string(),
                    v.incidents.len().to_string(),
                ]
            })
            .collect();
        columns(
            &["VANTAGE", "AVAIL", "OK/JUDGED", "ERRORS", "PENDING", "INCIDENTS"],
            &rows,
            &mut out,
        );
        let rows: Vec<Vec<String>> = r
            .channels
            .iter()
            .flat_map(|c| {
                c.vantages.iter().map(|v| {
                    let a = &v.availability;
                    vec![
                        c.id.clone(),
                        v.vantage.clone(),
                        pct(a.percent),
                        format!("{}/{}", a.successful, a.judged),
                    ]
                })
            })
            .collect();
        if !rows.is_empty() {
            out.push('\n');
            columns(&["CHANNEL", "VANTAGE", "AVAIL", "OK/JUDGED"], &rows, &mut out);
        }
    }
    // Retention canaries: checks done in the period, lost/altered counted as failures.
    let rows: Vec<Vec<String>> = r
        .channels
        .iter()
        .filter(|c| c.retention != figures::RetentionFigures::default())
        .map(|c| {
            let t = &c.retention;
            vec![
                c.id.clone(),
                t.kept.to_string(),
                t.lost.to_string(),
                t.altered.to_string(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push('\n');
        columns(&["RETAINED", "KEPT", "LOST", "ALTERED"], &rows, &mut out);
    }
    let incidents: Vec<&figures::IncidentReport> = r
        .channels
        .iter()
        .flat_map(|c| c.incidents.iter())
        .chain(r.vantages.iter().flat_map(|v| v.incidents.iter()))
        .chain(r.other_incidents.iter())
        .collect();
    if !incidents.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = incidents
            .iter()
            .map(|i| {
                let mut opened = when(i.opened_at);
                if i.opened_before_period {
                    opened.push_str(" (before)");
                }
                vec![
                    i.id.to_string(),
                    i.channel.clone(),
                    i.verdict.clone(),
                    opened,
                    i.resolved_at.map(when).unwrap_or_else(|| "open".into()),
                    dur(i.time_to_detect_ms),
                    dur(i.time_to_acknowledge_ms),
                    dur(i.time_to_resolve_ms),
                    i.pages_sent.to_string(),
                ]
            })
            .collect();
        columns(
            &[
                "INCIDENT", "CHANNEL", "VERDICT", "OPENED", "RESOLVED", "TTD", "TTA", "TTR", "PAGES",
            ],
            &rows,
            &mut out,
        );
    }
    if !r.watchers.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = r
            .watchers
            .iter()
            .map(|w| {
                vec![
                    w.watcher.clone(),
                    w.spells.to_string(),
                    human_ms(w.blind_ms),
                    w.longest
                        .as_ref()
                        .map(|l| human_ms(l.ms))
                        .unwrap_or_else(|| "\u{2014}".into()),
                    w.longest.as_ref().map(|l| when(l.since)).unwrap_or_default(),
                    w.longest.as_ref().map(|l| l.why.clone()).unwrap_or_default(),
                ]
            })
            .collect();
        columns(
            &["WATCHER", "BLIND SPELLS", "BLIND", "LONGEST", "LONGEST FROM", "WHY"],
            &rows,
            &mut out,
        );
    }
    out.push('\n');
    for n in &r.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

#[derive(Serialize, Default)]
struct CsvRow<'a> {
    channel: &'a str,
    name: &'a str,
    owner: &'a str,
    period_from: String,
    period_to: String,
    judged: i64,
    successful: i64,
    errors: i64,
    pending: i64,
    availability_percent: Option<String>,
    incidents_opened: Option<i64>,
    incidents_in_period: Option<i64>,
    compliance_findings: Option<i64>,
    pages_sent: Option<i64>,
    mean_time_to_detect_s: Option<f64>,
    mean_time_to_acknowledge_s: Option<f64>,
    mean_time_to_resolve_s: Option<f64>,
    incident_time_s: Option<f64>,
    retention_kept: Option<i64>,
    retention_lost: Option<i64>,
    retention_altered: Option<i64>,
    /// Empty on a channel's row; a vantage point's name on the channel's
    /// per-vantage rows (which carry only the probe counts). Last, so the
    /// columns before it keep their places.
    vantage: &'a str,
}

/// One CSV row per channel (RFC 4180, with a header), and with vantage
/// points one more per channel and vantage (`vantage` set, probe counts only).
pub fn csv(r: &Report) -> Result<String, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let secs = |ms: Option<i64>| ms.map(|m| m as f64 / 1000.0);
    for c in &r.channels {
        let s = &c.summary;
        w.serialize(CsvRow {
            channel: &c.id,
            vantage: "",
            name: &c.name,
            owner: &c.owner,
            period_from: when(r.period.from),
            period_to: when(r.period.to),
            judged: s.availability.judged,
            successful: s.availability.successful,
            errors: s.availability.errors,
            pending: s.availability.pending,
            availability_percent: s.availability.percent.map(|p| format!("{p:.4}")),
            incidents_opened: Some(s.incidents_opened),
            incidents_in_period: Some(s.incidents_in_period),
            compliance_findings: Some(s.compliance_findings),
            pages_sent: Some(s.pages_sent),
            mean_time_to_detect_s: secs(s.mean_time_to_detect_ms),
            mean_time_to_acknowledge_s: secs(s.mean_time_to_acknowledge_ms),
            mean_time_to_resolve_s: secs(s.mean_time_to_resolve_ms),
            incident_time_s: Some(s.incident_time_ms as f64 / 1000.0),
            retention_kept: Some(c.retention.kept),
            retention_lost: Some(c.retention.lost),
            retention_altered: Some(c.retention.altered),
        })
        .map_err(|e| e.to_string())?;
        for v in &c.vantages {
            let a = &v.availability;
            w.serialize(CsvRow {
                channel: &c.id,
                vantage: &v.vantage,
                name: &c.name,
                owner: &c.owner,
                period_from: when(r.period.from),
                period_to: when(r.period.to),
                judged: a.judged,
                successful: a.successful,
                errors: a.errors,
                pending: a.pending,
                availability_percent: a.percent.map(|p| format!("{p:.4}")),
                ..CsvRow::default()
            })
            .map_err(|e| e.to_string())?;
        }
    }
    let bytes = w.into_inner().map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}
