//! The staff status page: server-rendered HTML with inline CSS and SVG, no
//! JavaScript. It opens with an overview (counts, then everything that is
//! open: channel, prober-side, DNS and discovery incidents as summaries),
//! shows failing and degraded channels in full and healthy ones summarised
//! per owner (each owner has its own page), and the state of every watcher,
//! sender and notifier queue. Search and filters are query parameters.
//! Every text that comes from outside (server replies, channel names) is escaped.

use std::collections::HashMap;

use super::escape::esc;
use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;

use super::api::{views_for, views_for_rows, ChannelView, Point};
use super::summary::{overview, shown_target, Filter, Overview};
use super::{store_error, AppState, Identity};
use crate::config::{Language, Role};
use crate::ledger::{Incident, PageRecord};
use crate::verdict::{human_ms, now_millis};

/// What stays as it is in a path segment or query value (RFC 3986 unreserved).
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A path segment or query-string value.
fn q(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

struct Labels {
    lang: &'static str,
    status: &'static str,
    channel: &'static str,
    owner: &'static str,
    state: &'static str,
    last: &'static str,
    latency: &'static str,
    uptime: &'static str,
    trend: &'static str,
    open_incidents: &'static str,
    none_open: &'static str,
    watcher_blind: &'static str,
    since: &'static str,
    ok: &'static str,
    failing: &'static str,
    degraded: &'static str,
    unknown: &'static str,
    updated: &'static str,
    history: &'static str,
    time: &'static str,
    verdict: &'static str,
    detail: &'static str,
    target: &'static str,
    back: &'static str,
    channels: &'static str,
    silenced: &'static str,
    failing_channels: &'static str,
    healthy_by_owner: &'static str,
    search: &'static str,
    all: &'static str,
    failures: &'static str,
    last_failure: &'static str,
    paged: &'static str,
    not_paged: &'static str,
    acknowledged_by: &'static str,
    acknowledge: &'static str,
    reason: &'static str,
    timeline: &'static str,
    system: &'static str,
    watchers: &'static str,
    senders: &'static str,
    notifiers: &'static str,
    queued: &'static str,
    silences: &'static str,
    silence: &'static str,
    end: &'static str,
    duration: &'static str,
    until: &'static str,
    actions: &'static str,
    reload: &'static str,
    reload_failed: &'static str,
    older: &'static str,
    newer: &'static str,
    csv: &'static str,
    more: &'static str,
}

const EN: Labels = Labels {
    lang: "en",
    status: "Status",
    channel: "Channel",
    owner: "Owner",
    state: "State",
    last: "Last verdict",
    latency: "Latency",
    uptime: "Uptime 24h / 7d / 30d",
    trend: "Last probes",
    open_incidents: "Open incidents",
    none_open: "No open incidents.",
    watcher_blind: "Not watched: inbox watcher",
    since: "since",
    ok: "OK",
    failing: "FAILING",
    degraded: "UNCERTAIN",
    unknown: "NOT YET PROBED",
    updated: "Updated",
    history: "Probe history",
    time: "Created",
    verdict: "Verdict",
    detail: "Detail",
    target: "Target",
    back: "Overview",
    channels: "channels",
    silenced: "silenced",
    failing_channels: "Failing and uncertain channels",
    healthy_by_owner: "Channels by owner",
    search: "Search",
    all: "all",
    failures: "failed probes",
    last_failure: "last failure",
    paged: "paged",
    not_paged: "nobody paged",
    acknowledged_by: "acknowledged by",
    acknowledge: "Acknowledge",
    reason: "reason",
    timeline: "Timeline",
    system: "postcanary itself",
    watchers: "Inbox watchers",
    senders: "Senders",
    notifiers: "Notifier queues",
    queued: "queued",
    silences: "Silences in force",
    silence: "Silence",
    end: "End",
    duration: "for",
    until: "until",
    actions: "Recent actions",
    reload: "Reload config",
    reload_failed: "The changed config was refused; still running the previous one",
    older: "Older",
    newer: "Newest",
    csv: "CSV download",
    more: "more",
};

const DA: Labels = Labels {
    lang: "da",
    status: "Status",
    channel: "Kanal",
    owner: "Ejer",
    state: "Tilstand",
    last: "Seneste resultat",
    latency: "Svartid",
    uptime: "Oppetid 24t / 7d / 30d",
    trend: "Seneste målinger",
    open_incidents: "Åbne hændelser",
    none_open: "Ingen åbne hændelser.",
    watcher_blind: "Overvåges ikke: indbakke-overvåger",
    since: "siden",
    ok: "OK",
    failing: "FEJLER",
    degraded: "USIKKER",
    unknown: "IKKE MÅLT ENDNU",
    updated: "Opdateret",
    history: "Målehistorik",
    time: "Oprettet",
    verdict: "Resultat",
    detail: "Detaljer",
    target: "Mål",
    back: "Overblik",
    channels: "kanaler",
    silenced: "dæmpet",
    failing_channels: "Kanaler der fejler eller er usikre",
    healthy_by_owner: "Kanaler pr. ejer",
    search: "Søg",
    all: "alle",
    failures: "fejlede målinger",
    last_failure: "seneste fejl",
    paged: "kaldt",
    not_paged: "ingen kaldt",
    acknowledged_by: "kvitteret af",
    acknowledge: "Kvittér",
    reason: "begrundelse",
    timeline: "Forløb",
    system: "postcanary selv",
    watchers: "Indbakke-overvågere",
    senders: "Afsendere",
    notifiers: "Kø til varsling",
    queued: "i kø",
    silences: "Aktive dæmpninger",
    silence: "Dæmp",
    end: "Afslut",
    duration: "i",
    until: "til",
    actions: "Seneste handlinger",
    reload: "Genindlæs konfiguration",
    reload_failed: "Den ændrede konfiguration blev afvist; den tidligere kører stadig",
    older: "Ældre",
    newer: "Nyeste",
    csv: "Hent CSV",
    more: "flere",
};

fn labels(l: Language) -> &'static Labels {
    match l {
        Language::Da => &DA,
        Language::En => &EN,
    }
}

fn is_success(verdict: &str) -> bool {
    verdict
        .parse::<crate::verdict::Verdict>()
        .is_ok_and(crate::verdict::Verdict::is_success)
}

/// A verdict in the page's language.
fn verdict_text(l: Language, v: &str) -> &str {
    if l == Language::En {
        return match v {
            "expected_bounce" => "expected bounce",
            "handed_off" => "handed off to IdP",
            "routing_changed" => "routing changed",
            "unmonitored_channel" => "not monitored",
            "error" => "postcanary could not probe",
            "lost" => "retained canary deleted",
            "altered" => "retained canary changed",
            other => other,
        };
    }
    match v {
        "delivered" => "leveret",
        "late" => "forsinket",
        "missed" => "ikke modtaget",
        "bounced" => "returneret",
        "rejected" => "afvist",
        "misrouted" => "fejlsendt",
        "junked" => "endt som spam",
        "expected_bounce" => "afvist som forventet",
        "handed_off" => "sendt videre til login",
        "error" => "fejl hos postcanary",
        "pending" => "afventer",
        "routing_changed" => "routning ændret",
        "unmonitored_channel" => "ikke overvåget",
        "lost" => "gemt kanariefugl slettet",
        "altered" => "gemt kanariefugl ændret",
        other => other,
    }
}

/// A time in the page's zone, with the zone's abbreviation.
fn time_in(tz: chrono_tz::Tz, ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z").to_string())
        .unwrap_or_default()
}

fn pct(p: Option<f64>) -> String {
    p.map(|p| format!("{p:.1}%")).unwrap_or_else(|| "–".into())
}

/// Latencies as an inline SVG line; failures as red dots on the baseline.
pub(super) fn sparkline(points: &[Point]) -> String {
    const W: f64 = 120.0;
    const H: f64 = 24.0;
    if points.is_empty() {
        return String::new();
    }
    let max = points.iter().filter_map(|p| p.latency_ms).max().unwrap_or(1).max(1) as f64;
    let step = if points.len() > 1 {
        W / (points.len() - 1) as f64
    } else {
        0.0
    };
    let mut line = String::new();
    let mut dots = String::new();
    for (i, p) in points.iter().enumerate() {
        let x = i as f64 * step;
        let ok = is_success(&p.verdict);
        match (ok, p.latency_ms) {
            (true, Some(l)) => {
                let y = H - 2.0 - (l as f64 / max) * (H - 4.0);
                let _ = write!(line, "{x:.1},{y:.1} ");
            }
            (true, None) => {}
            (false, _) => {
                let _ = write!(
                    dots,
                    "<circle cx=\"{x:.1}\" cy=\"{:.1}\" r=\"2.5\" class=\"bad\"/>",
                    H - 2.5
                );
            }
        }
    }
    format!(
        "<svg class=\"spark\" viewBox=\"-3 0 {} {H}\" width=\"{}\" height=\"{H}\" role=\"img\" aria-label=\"latency trend\">\
         <polyline points=\"{}\" fill=\"none\" stroke=\"currentColor\" stroke-width=\"1.5\"/>{dots}</svg>",
        W + 6.0,
        W + 6.0,
        line.trim_end()
    )
}

const CSS: &str = "
*{box-sizing:border-box}body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1b1f23;background:#f6f7f9}
header{background:#1b3a5c;color:#fff;padding:10px 14px}header h1{margin:0;font-size:19px}header p{margin:2px 0 0;opacity:.85;font-size:13px}
main{padding:10px 14px;max-width:1200px;margin:auto}h2{font-size:16px;margin:18px 0 6px}
table{width:100%;border-collapse:collapse;background:#fff;border:1px solid #dde1e6}th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eceef1;vertical-align:top}
th{font-size:12px;text-transform:uppercase;color:#57606a;background:#fafbfc}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;font-weight:600;font-size:12px;white-space:nowrap}
.ok{background:#dafbe1;color:#116329}.failing{background:#ffebe9;color:#a40e26}.degraded{background:#fff8c5;color:#7d4e00}.unknown{background:#eaeef2;color:#57606a}
.spark{color:#0969da}.spark .bad{fill:#cf222e}.incident{background:#fff;border:1px solid #f1aeb5;border-left:5px solid #cf222e;padding:8px 10px;margin:6px 0}
.incident.acked{border-left-color:#bf8700}.incident h3{margin:0 0 4px;font-size:15px}.timeline{margin:6px 0 0;padding-left:18px;font-size:13px;color:#444}
.muted{color:#57606a;font-size:13px}.blind,.banner{background:#fff1f0;border-left:4px solid #cf222e;padding:6px 10px;margin:6px 0}
.counts{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0 8px}.counts a{text-decoration:none}
.detail{font-size:13px;color:#444;word-break:break-word}a{color:#0969da}form.inline{display:flex;flex-wrap:wrap;gap:4px;margin:4px 0}
input,select,button{font:inherit;font-size:13px;padding:3px 6px}
@media (max-width:700px){table,thead,tbody,tr,td{display:block}thead{display:none}tr{border-bottom:2px solid #dde1e6;padding:4px 0}
td{border:none;padding:2px 8px}td[data-l]::before{content:attr(data-l) ': ';font-weight:600;color:#57606a;font-size:12px}}
";

/// A page under construction: labels, zone, form token and role.
struct Ctx {
    l: &'static Labels,
    lang: Language,
    tz: chrono_tz::Tz,
    csrf: String,
    set_cookie: bool,
    operator: bool,
}

impl Ctx {
    fn new(s: &AppState, headers: &HeaderMap, who: &Identity) -> Ctx {
        let (csrf, set_cookie) = super::ops::csrf_token(headers);
        Ctx {
            l: labels(s.server.language),
            lang: s.server.language,
            tz: s.server.timezone,
            csrf,
            set_cookie,
            operator: who.role == Role::Operator,
        }
    }

    fn time(&self, ms: i64) -> String {
        time_in(self.tz, ms)
    }

    /// The hidden fields every form carries.
    fn hidden(&self, back: &str) -> String {
        format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"back\" value=\"{}\">",
            esc(&self.csrf),
            esc(back)
        )
    }

    fn respond(&self, html: String) -> Response {
        let mut resp = Html(html).into_response();
        if self.set_cookie {
            if let Ok(v) = header::HeaderValue::from_str(&super::ops::csrf_set_cookie(&self.csrf)) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
        }
        resp
    }
}

fn head(out: &mut String, l: &Labels, title: &str) {
    let _ = write!(
        out,
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"60\"><title>{}</title><style>{CSS}</style></head><body>",
        l.lang,
        esc(title)
    );
}

fn badge(l: &Labels, state: &str) -> String {
    let text = match state {
        "ok" => l.ok,
        "failing" => l.failing,
        "degraded" => l.degraded,
        _ => l.unknown,
    };
    format!("<span class=\"badge {}\">{text}</span>", esc(state))
}

/// What an incident that is no channel's is about, from its key.
fn other_incident_title(key: &str) -> String {
    if let Some(inbox) = key.strip_prefix("postcanary:inbox:") {
        format!("postcanary itself: inbox `{inbox}` not watched")
    } else if let Some(sender) = key.strip_prefix("postcanary:") {
        format!("postcanary itself: sender `{sender}`")
    } else if let Some(domain) = key.strip_prefix("dns:") {
        format!("mail routing of {domain} changed (DNS)")
    } else if let Some(finding) = key.strip_prefix("discover:") {
        let what = finding.split_once(':').map(|(_, w)| w).unwrap_or(finding);
        format!("unmonitored public channel {what}")
    } else {
        key.to_string()
    }
}

/// The title of any incident: the channel's name, or what the key says.
fn incident_title(s: &AppState, i: &Incident) -> String {
    match s.config().channel(&i.channel) {
        Some(ch) => ch.name.clone(),
        None => other_incident_title(&i.channel),
    }
}

/// Who was paged when, in one line.
fn paged_line(c: &Ctx, pages: &[&PageRecord]) -> String {
    if pages.is_empty() {
        return c.l.not_paged.to_string();
    }
    let mut parts = Vec::new();
    for p in pages.iter().take(6) {
        let how = match p.state.as_str() {
            "sent" => "✓".to_string(),
            "failed" => "✗".to_string(),
            _ if p.attempts > 0 => format!("… {}", p.last_error.as_deref().unwrap_or("failing")),
            _ => "…".to_string(),
        };
        parts.push(format!(
            "{} {} {} {}",
            esc(&p.notifier),
            esc(&p.event),
            c.time(p.sent_at.unwrap_or(p.created_at)),
            esc(&how)
        ));
    }
    if pages.len() > 6 {
        parts.push(format!("+{} {}", pages.len() - 6, c.l.more));
    }
    format!("{}: {}", c.l.paged, parts.join(" · "))
}

/// An incident as a summary: what fails, since when and for how long, how
/// many probes failed, the last failure, who was paged when, who acknowledged.
fn incident_summary(out: &mut String, s: &AppState, c: &Ctx, i: &Incident, pages: &[&PageRecord], back: &str) {
    let now = now_millis();
    let title = incident_title(s, i);
    let link = match s.config().channel(&i.channel) {
        Some(ch) => format!("<a href=\"/channels/{}\">{}</a>", q(&ch.id), esc(&title)),
        None => esc(&title),
    };
    let _ = write!(
        out,
        "<div class=\"incident{}\" data-incident=\"{}\" data-channel=\"{}\"><h3>{link} — {}</h3>\
         <div class=\"muted\">{} {} ({}) · {} {} · {} {}{}</div><div class=\"detail\">{}</div><div class=\"muted\">{}</div>",
        if i.acknowledged_at.is_some() { " acked" } else { "" },
        i.id,
        esc(&i.channel),
        esc(verdict_text(c.lang, &i.verdict)),
        c.l.since,
        c.time(i.opened_at),
        human_ms((now - i.opened_at).max(0)),
        i.failures,
        c.l.failures,
        c.l.last_failure,
        c.time(i.last_failure_at),
        if i.silenced.is_some() { format!(" · {}", c.l.silenced) } else { String::new() },
        esc(&i.detail),
        paged_line(c, pages),
    );
    match (&i.acknowledged_by, i.acknowledged_at) {
        (Some(by), Some(at)) => {
            let _ = write!(
                out,
                "<div class=\"muted\">{} <b>{}</b> {}</div>",
                c.l.acknowledged_by,
                esc(by),
                c.time(at)
            );
        }
        _ if c.operator => {
            let _ = write!(
                out,
                "<form class=\"inline ack\" method=\"post\" action=\"/incidents/{}/acknowledge\">{}<input name=\"reason\" placeholder=\"{}\" maxlength=\"500\"><button>{}</button></form>",
                i.id,
                c.hidden(back),
                c.l.reason,
                c.l.acknowledge
            );
        }
        _ => {}
    }
    let _ = write!(
        out,
        "<a class=\"muted\" href=\"/incidents/{}\">{} →</a></div>",
        i.id, c.l.timeline
    );
}

/// The full rows of channels.
fn channel_rows(out: &mut String, c: &Ctx, views: &[ChannelView], states: &HashMap<String, &'static str>) {
    let l = c.l;
    let _ = write!(
        out,
        "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        l.channel, l.state, l.last, l.latency, l.uptime, l.trend
    );
    for v in views {
        let state = states.get(&v.id).copied().unwrap_or(v.state.as_str());
        let last = v
            .last
            .as_ref()
            .map(|x| {
                format!(
                    "{} <span class=\"muted\">{}</span>",
                    esc(verdict_text(c.lang, &x.verdict)),
                    c.time(x.at)
                )
            })
            .unwrap_or_else(|| "–".into());
        let latency = v
            .last
            .as_ref()
            .and_then(|x| x.latency_ms)
            .map(human_ms)
            .unwrap_or_else(|| "–".into());
        let _ = write!(
            out,
            "<tr data-channel=\"{}\" data-state=\"{}\"><td data-l=\"{}\"><a href=\"/channels/{}\">{}</a><div class=\"muted\">{} · <a href=\"/owners/{}\">{}</a></div></td>\
             <td data-l=\"{}\">{}</td><td data-l=\"{}\">{}</td><td data-l=\"{}\">{}</td><td data-l=\"{}\">{} / {} / {}</td><td data-l=\"{}\">{}</td></tr>",
            esc(&v.id),
            esc(state),
            l.channel,
            q(&v.id),
            esc(&v.name),
            esc(&v.target),
            q(&v.owner),
            esc(&v.owner),
            l.state,
            badge(l, state),
            l.last,
            last,
            l.latency,
            latency,
            l.uptime,
            pct(v.uptime.h24),
            pct(v.uptime.d7),
            pct(v.uptime.d30),
            l.trend,
            sparkline(&v.recent)
        );
    }
    out.push_str("</tbody></table>");
}

/// Most channels a page shows in full (owner pages, filtered lists).
const FULL_ROWS: usize = 200;
/// On the overview: most incident summaries and failing rows shown (the
/// rest are one click away, `?state=failing`), so the page stays small.
const OVERVIEW_ROWS: usize = 50;

async fn pages_by_incident(
    s: &AppState,
    ids: &[i64],
) -> Result<HashMap<i64, Vec<PageRecord>>, crate::ledger::StoreError> {
    let mut by: HashMap<i64, Vec<PageRecord>> = HashMap::new();
    for p in s.store.pages_of(ids).await? {
        by.entry(p.incident_id).or_default().push(p);
    }
    Ok(by)
}

/// The overview page; `owner_page` names the owner whose page this is.
async fn render(
    s: &AppState,
    c: &Ctx,
    filter: &Filter,
    owner_page: Option<&str>,
) -> Result<String, crate::ledger::StoreError> {
    let l = c.l;
    let config = s.config();
    let title = s.server.title.clone();
    let ov: Overview = overview(s, &config, filter).await?;
    let here = match owner_page {
        Some(o) => format!("/owners/{}", q(o)),
        None => "/".to_string(),
    };
    let mut out = String::with_capacity(64 * 1024);
    head(
        &mut out,
        l,
        &match owner_page {
            Some(o) => format!("{o} — {title}"),
            None => title.clone(),
        },
    );
    let counts = match owner_page {
        Some(o) => ov.owners.iter().find(|x| x.owner == o).cloned().unwrap_or_default(),
        None => ov.counts.clone(),
    };
    let _ = write!(
        out,
        "<header><h1>{} — {}</h1><p>{} {}</p></header><main>",
        esc(owner_page.unwrap_or(&title)),
        l.status,
        l.updated,
        c.time(now_millis()),
    );
    if let Some(r) = &s.reloader {
        let st = r.status();
        if !st.ok && st.at.is_some() {
            let _ = write!(
                out,
                "<div class=\"banner\" role=\"alert\" id=\"reload-errors\"><b>{}</b> ({})<ul>",
                l.reload_failed,
                c.time(st.at.unwrap_or_default())
            );
            for e in st.errors.iter().take(20) {
                let _ = write!(out, "<li>{}</li>", esc(e));
            }
            out.push_str("</ul></div>");
        }
    }
    // The overview: counts that link to their filter.
    let link = |state: &str| match owner_page {
        Some(o) => format!("/owners/{}?state={state}", q(o)),
        None => format!("/?state={state}"),
    };
    let _ = write!(
        out,
        "<div class=\"counts\" id=\"overview\"><b>{} {}</b> <a href=\"{}\">{}&nbsp;{}</a> <a href=\"{}\">{}&nbsp;{}</a> <a href=\"{}\">{}&nbsp;{}</a> <a href=\"{}\">{}&nbsp;{}</a></div>",
        counts.total,
        l.channels,
        link("failing"),
        badge(l, "failing"),
        counts.failing,
        link("degraded"),
        badge(l, "degraded"),
        counts.degraded,
        link("ok"),
        badge(l, "ok"),
        counts.ok,
        link("unknown"),
        badge(l, "unknown"),
        counts.unknown,
    );
    for p in s.points.0.iter() {
        if let Some((since, why)) = p.blind_since() {
            let _ = write!(
                out,
                "<p class=\"blind\" role=\"alert\">{} <b>{}</b> — {} {}: {}</p>",
                l.watcher_blind,
                esc(&p.name),
                l.since,
                c.time(since),
                esc(&why)
            );
        }
    }
    // Every open incident, as a summary.
    let mut open: Vec<&Incident> = ov.others.iter().filter(|_| owner_page.is_none()).collect();
    let owner_of: HashMap<&str, &str> = match owner_page {
        Some(_) => config
            .channels
            .iter()
            .map(|c| (c.id.as_str(), c.owner.as_str()))
            .collect(),
        None => HashMap::new(),
    };
    let mut chan_open: Vec<&Incident> = ov
        .open
        .values()
        .filter(|i| owner_page.is_none_or(|o| owner_of.get(i.channel.as_str()).is_some_and(|c| *c == o)))
        .collect();
    chan_open.sort_by_key(|i| i.opened_at);
    open.extend(chan_open);
    let cap = if owner_page.is_some() || filter.active() {
        FULL_ROWS
    } else {
        OVERVIEW_ROWS
    };
    let ids: Vec<i64> = open.iter().take(cap).map(|i| i.id).collect();
    let pages = pages_by_incident(s, &ids).await?;
    let _ = write!(out, "<h2>{} ({})</h2>", l.open_incidents, open.len());
    if open.is_empty() {
        let _ = write!(out, "<p class=\"muted\">{}</p>", l.none_open);
    }
    for i in open.iter().take(cap) {
        let p: Vec<&PageRecord> = pages.get(&i.id).map(|v| v.iter().collect()).unwrap_or_default();
        incident_summary(&mut out, s, c, i, &p, &here);
    }
    if open.len() > cap {
        let _ = write!(
            out,
            "<p class=\"muted\"><a href=\"{}\">+{} {} →</a></p>",
            esc(&link("failing")),
            open.len() - cap,
            l.more
        );
    }

    // Search and filter (a GET form: works without scripts).
    let _ = write!(out, "<form class=\"inline\" method=\"get\" action=\"{here}\"><input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"{}\">", esc(filter.q.as_deref().unwrap_or("")), l.search);
    if owner_page.is_none() {
        out.push_str("<select name=\"owner\"><option value=\"\">");
        let _ = write!(out, "{} ({})</option>", l.owner, l.all);
        for o in &ov.owners {
            let sel = if filter.owner.as_deref() == Some(o.owner.as_str()) {
                " selected"
            } else {
                ""
            };
            let _ = write!(
                out,
                "<option value=\"{}\"{sel}>{}</option>",
                esc(&o.owner),
                esc(&o.owner)
            );
        }
        out.push_str("</select>");
    }
    let _ = write!(
        out,
        "<select name=\"state\"><option value=\"\">{} ({})</option>",
        l.state, l.all
    );
    for st in ["failing", "degraded", "ok", "unknown"] {
        let sel = if filter.state.as_deref() == Some(st) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<option value=\"{st}\"{sel}>{}</option>",
            match st {
                "failing" => l.failing,
                "degraded" => l.degraded,
                "ok" => l.ok,
                _ => l.unknown,
            }
        );
    }
    let _ = write!(out, "</select><button>{}</button></form>", l.search);

    // Channels: in full when filtered or on an owner's page; else failing
    // and degraded in full and the rest summarised per owner.
    let full = filter.active() || owner_page.is_some();
    let offset = filter.offset.unwrap_or(0);
    let shown: Vec<String> = if full {
        ov.selected.iter().skip(offset).take(FULL_ROWS).cloned().collect()
    } else {
        ov.selected
            .iter()
            .filter(|id| matches!(ov.states.get(*id).copied(), Some("failing" | "degraded")))
            .take(OVERVIEW_ROWS)
            .cloned()
            .collect()
    };
    if full {
        let _ = write!(out, "<h2>{} ({})</h2>", l.channels, ov.selected.len());
    } else {
        let _ = write!(
            out,
            "<h2>{} ({})</h2>",
            l.failing_channels,
            counts.failing + counts.degraded
        );
    }
    if !shown.is_empty() {
        let views = views_for_rows(s, &shown, &ov.open).await?;
        channel_rows(&mut out, c, &views, &ov.states);
    }
    if full && ov.selected.len() > offset + FULL_ROWS {
        let mut next = format!("{here}?offset={}", offset + FULL_ROWS);
        for (k, v) in [("q", &filter.q), ("owner", &filter.owner), ("state", &filter.state)] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                let _ = write!(next, "&{k}={}", q(v));
            }
        }
        let _ = write!(out, "<p><a href=\"{}\">{} →</a></p>", esc(&next), l.more);
    }
    if owner_page.is_none() {
        let _ = write!(
            out,
            "<h2>{}</h2><table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
            l.healthy_by_owner, l.owner, l.channels, l.ok, l.failing, l.degraded, l.unknown
        );
        for o in &ov.owners {
            let _ = write!(
                out,
                "<tr data-owner=\"{}\"><td data-l=\"{}\"><a href=\"/owners/{}\">{}</a></td><td data-l=\"{}\">{}</td><td data-l=\"{}\">{}</td><td data-l=\"{}\">{}</td><td data-l=\"{}\">{}</td><td data-l=\"{}\">{}</td></tr>",
                esc(&o.owner), l.owner, q(&o.owner), esc(&o.owner), l.channels, o.total, l.ok, o.ok, l.failing, o.failing, l.degraded, o.degraded, l.unknown, o.unknown
            );
        }
        out.push_str("</tbody></table>");
        system(&mut out, s, c, &ov).await?;
    }
    silences(&mut out, s, c, &here, owner_page).await?;
    out.push_str("</main></body></html>");
    Ok(out)
}

/// postcanary's own parts: watchers, senders, notifier queues; the audit log.
async fn system(out: &mut String, s: &AppState, c: &Ctx, ov: &Overview) -> Result<(), crate::ledger::StoreError> {
    let l = c.l;
    let config = s.config();
    let _ = write!(out, "<h2>{}</h2><table><tbody>", l.system);
    for (name, st) in s.watcher_states() {
        let (state, text) = match &st {
            crate::inbox::imap::WatcherState::Idle => ("ok", "IDLE".to_string()),
            crate::inbox::imap::WatcherState::Polling => ("ok", "polling".to_string()),
            crate::inbox::imap::WatcherState::Connecting => ("unknown", "connecting".to_string()),
            crate::inbox::imap::WatcherState::Backoff(e) => ("failing", format!("reconnecting: {e}")),
            crate::inbox::imap::WatcherState::Stopped => ("unknown", "stopped".to_string()),
        };
        let state = if s.points.0.iter().any(|p| p.name == name && p.blind_since().is_some()) {
            "failing"
        } else {
            state
        };
        let _ = write!(
            out,
            "<tr data-watcher=\"{}\"><td data-l=\"{}\">{}</td><td>{}</td><td class=\"detail\">{}</td></tr>",
            esc(&name),
            l.watchers,
            esc(&name),
            badge(l, state),
            esc(&text)
        );
    }
    let mut senders: Vec<String> = config.senders.iter().map(|x| x.name.clone()).collect();
    if config
        .channels
        .iter()
        .any(|ch| matches!(ch.kind, crate::config::ChannelKind::Form { .. }))
    {
        senders.push(crate::incident::FORMS_PATH.to_string());
    }
    for name in senders {
        let key = crate::incident::degraded_key(&name);
        let open = ov.others.iter().find(|i| i.channel == key);
        let (state, text) = match open {
            Some(i) => ("failing", format!("{} {}: {}", l.since, c.time(i.opened_at), i.detail)),
            None => ("ok", String::new()),
        };
        let _ = write!(
            out,
            "<tr data-sender=\"{}\"><td data-l=\"{}\">{}</td><td>{}</td><td class=\"detail\">{}</td></tr>",
            esc(&name),
            l.senders,
            esc(&name),
            badge(l, state),
            esc(&text)
        );
    }
    let states = s.store.outbox_states().await?;
    for n in &config.notifiers {
        let st = states.iter().find(|o| o.notifier == n.name);
        let (state, text) = match st {
            Some(o) if o.failing > 0 => (
                "failing",
                format!(
                    "{} {} ({} failing): {}",
                    o.queued,
                    l.queued,
                    o.failing,
                    o.last_error.as_deref().unwrap_or("")
                ),
            ),
            Some(o) if o.queued > 0 => ("unknown", format!("{} {}", o.queued, l.queued)),
            Some(o) => (
                "ok",
                o.last_sent_at.map(|t| format!("✓ {}", c.time(t))).unwrap_or_default(),
            ),
            None => ("ok", String::new()),
        };
        let _ = write!(out, "<tr data-notifier=\"{}\"><td data-l=\"{}\">{} <span class=\"muted\">{}</span></td><td>{}</td><td class=\"detail\">{}</td></tr>", esc(&n.name), l.notifiers, esc(&n.name), n.kind.as_str(), badge(l, state), esc(&text));
    }
    out.push_str("</tbody></table>");
    if c.operator {
        let _ = write!(
            out,
            "<form class=\"inline\" method=\"post\" action=\"/reload\">{}<button>{}</button></form>",
            c.hidden("/"),
            l.reload
        );
    }
    let log = s.store.audit_log(None, 10).await?;
    if !log.is_empty() {
        let _ = write!(out, "<h2>{}</h2><ol class=\"timeline\" id=\"audit\">", l.actions);
        for a in &log {
            let _ = write!(
                out,
                "<li>{} — <b>{}</b> {} {}{}</li>",
                c.time(a.at),
                esc(&a.actor),
                esc(&a.action),
                esc(&a.target),
                if a.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", esc(&a.reason))
                }
            );
        }
        out.push_str("</ol><p><a class=\"muted\" href=\"/audit\">→</a></p>");
    }
    Ok(())
}

/// Silences in force (run-time and the config's), and the form to set one.
async fn silences(
    out: &mut String,
    s: &AppState,
    c: &Ctx,
    back: &str,
    owner_page: Option<&str>,
) -> Result<(), crate::ledger::StoreError> {
    let l = c.l;
    let config = s.config();
    let now = now_millis();
    let active = s.store.silences(Some(now), 200).await?;
    let cfg: Vec<&crate::config::Silence> = config
        .silences
        .iter()
        .filter(|x| x.from.is_none_or(|f| f <= now) && now < x.until)
        .collect();
    let _ = write!(
        out,
        "<h2>{} ({})</h2><ul id=\"silences\">",
        l.silences,
        active.len() + cfg.len()
    );
    for x in &active {
        if owner_page.is_some_and(|o| {
            x.owner.as_deref() != Some(o)
                && x.channel
                    .as_ref()
                    .and_then(|ch| config.channel(ch))
                    .is_none_or(|ch| ch.owner != o)
        }) {
            continue;
        }
        let what = match (&x.channel, &x.owner) {
            (Some(ch), _) => format!("{} {}", l.channel, ch),
            (None, Some(o)) => format!("{} {}", l.owner, o),
            _ => String::new(),
        };
        let _ = write!(
            out,
            "<li data-silence=\"{}\"><b>{}</b> {} {} — {} ({})",
            x.id,
            esc(&what),
            l.until,
            c.time(x.until),
            esc(&x.reason),
            esc(&x.created_by)
        );
        if c.operator {
            let _ = write!(
                out,
                "<form class=\"inline\" method=\"post\" action=\"/silences/{}/end\">{}<button>{}</button></form>",
                x.id,
                c.hidden(back),
                l.end
            );
        }
        out.push_str("</li>");
    }
    for x in cfg {
        let what = x.channel.clone().or_else(|| x.owner.clone()).unwrap_or_default();
        let _ = write!(
            out,
            "<li><b>{}</b> {} {} — {} (config)</li>",
            esc(&what),
            l.until,
            c.time(x.until),
            esc(&x.reason)
        );
    }
    out.push_str("</ul>");
    if c.operator {
        let _ = write!(
            out,
            "<form class=\"inline silence\" method=\"post\" action=\"/silences\">{}<select name=\"target\">",
            c.hidden(back)
        );
        let mut owners: Vec<&str> = config
            .channels
            .iter()
            .map(|ch| ch.owner.as_str())
            .filter(|o| owner_page.is_none_or(|p| p == *o))
            .collect();
        owners.sort_unstable();
        owners.dedup();
        for o in owners {
            let _ = write!(
                out,
                "<option value=\"owner:{}\">{}: {}</option>",
                esc(o),
                l.owner,
                esc(o)
            );
        }
        // Per channel only on an owner's page: the list stays short.
        if let Some(o) = owner_page {
            for ch in config.channels.iter().filter(|ch| ch.owner == o) {
                let _ = write!(
                    out,
                    "<option value=\"channel:{}\">{}: {}</option>",
                    esc(&ch.id),
                    l.channel,
                    esc(&ch.name)
                );
            }
        }
        let _ = write!(out, "</select> {} <input name=\"duration\" value=\"2h\" size=\"5\"> <input name=\"reason\" placeholder=\"{}\" required maxlength=\"500\"><button>{}</button></form>", l.duration, l.reason, l.silence);
    }
    Ok(())
}

pub(super) async fn index(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Response {
    let c = Ctx::new(&s, &headers, &who);
    match render(&s, &c, &filter, None).await {
        Ok(html) => c.respond(html),
        Err(e) => store_error(e),
    }
}

pub(super) async fn owner(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(filter): Query<Filter>,
) -> Response {
    if !s.config().channels.iter().any(|c| c.owner == name) {
        return (StatusCode::NOT_FOUND, "no such owner\n").into_response();
    }
    let c = Ctx::new(&s, &headers, &who);
    let filter = Filter {
        owner: Some(name.clone()),
        ..filter
    };
    match render(&s, &c, &filter, Some(&name)).await {
        Ok(html) => c.respond(html),
        Err(e) => store_error(e),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct Paging {
    /// `created_at:id` of the last probe of the previous page.
    before: Option<String>,
    offset: Option<usize>,
}

/// Probes per page of a channel's history.
const HISTORY_PAGE: usize = 100;

pub(super) async fn channel(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> Response {
    let config = s.config();
    let Some(ch) = config.channel(&id) else {
        return (StatusCode::NOT_FOUND, "no such channel\n").into_response();
    };
    let c = Ctx::new(&s, &headers, &who);
    let l = c.l;
    let v = match views_for(&s, std::slice::from_ref(&id)).await {
        Ok(mut v) if !v.is_empty() => v.remove(0),
        Ok(_) => return (StatusCode::NOT_FOUND, "no such channel\n").into_response(),
        Err(e) => return store_error(e),
    };
    let cursor = paging
        .before
        .as_deref()
        .and_then(|b| b.split_once(':'))
        .and_then(|(t, i)| t.parse::<i64>().ok().map(|t| (t, i.to_string())));
    let history = match s.store.probes_before(&id, cursor.clone(), HISTORY_PAGE).await {
        Ok(h) => h,
        Err(e) => return store_error(e),
    };
    let mut out = String::new();
    head(&mut out, l, &format!("{} — {}", v.name, s.server.title));
    let here = format!("/channels/{}", q(&id));
    let _ = write!(
        out,
        "<header><h1>{}</h1><p>{}: {} · <a style=\"color:#fff\" href=\"/owners/{}\">{}</a></p></header><main><p><a href=\"/\">← {}</a></p><p>{} {}</p><p>{}: {} / {} / {}</p>",
        esc(&v.name),
        l.target,
        esc(&shown_target(ch)),
        q(&v.owner),
        esc(&v.owner),
        l.back,
        badge(l, &v.state),
        sparkline(&v.recent),
        l.uptime,
        pct(v.uptime.h24),
        pct(v.uptime.d7),
        pct(v.uptime.d30)
    );
    if let Ok(Some(i)) = s.store.open_incident(&id).await {
        let pages = s.store.pages_of(&[i.id]).await.unwrap_or_default();
        let p: Vec<&PageRecord> = pages.iter().collect();
        incident_summary(&mut out, &s, &c, &i, &p, &here);
    }
    if let Some(comp) = &v.compliance {
        out.push_str(&super::compliance::html(c.lang, comp));
    }
    out.push_str(&super::vantages::html(c.lang, &v.vantages, |t| c.time(t)));
    // Retention canaries: their open incident (lost/altered) and newest checks.
    if ch.retain.is_some() {
        if let Ok(Some(i)) = s.store.open_incident(&format!("retention:{id}")).await {
            let pages = s.store.pages_of(&[i.id]).await.unwrap_or_default();
            let p: Vec<&PageRecord> = pages.iter().collect();
            incident_summary(&mut out, &s, &c, &i, &p, &here);
        }
        let checks = s
            .store
            .retain_channel(&id, super::retain::SHOWN)
            .await
            .unwrap_or_default();
        out.push_str(&super::retain::html(c.lang, ch, &checks, &|t| c.time(t)));
    }
    let _ = write!(
        out,
        "<h2>{}</h2><p><a href=\"/channels/{}/probes.csv\">{}</a></p><table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        l.history, q(&id), l.csv, l.time, l.verdict, l.latency, l.detail
    );
    for p in &history {
        let _ = write!(
            out,
            "<tr data-verdict=\"{}\"><td data-l=\"{}\">{}</td><td data-l=\"{}\">{}</td><td data-l=\"{}\">{}</td><td data-l=\"{}\" class=\"detail\">{}<div class=\"muted\">{}</div></td></tr>",
            esc(p.verdict.as_str()),
            l.time,
            c.time(p.created_at),
            l.verdict,
            esc(verdict_text(c.lang, p.verdict.as_str())),
            l.latency,
            p.latency_ms.map(human_ms).unwrap_or_else(|| "–".into()),
            l.detail,
            esc(p.detail.as_deref().unwrap_or("")),
            esc(&p.token)
        );
    }
    out.push_str("</tbody></table><p>");
    if cursor.is_some() {
        let _ = write!(out, "<a href=\"{here}\">← {}</a> ", l.newer);
    }
    if history.len() == HISTORY_PAGE {
        if let Some(last) = history.last() {
            let _ = write!(
                out,
                "<a href=\"{here}?before={}:{}\" rel=\"next\">{} →</a>",
                last.created_at,
                q(&last.id),
                l.older
            );
        }
    }
    out.push_str("</p></main></body></html>");
    c.respond(out)
}

/// Timeline entries per page of an incident's page.
const TIMELINE_PAGE: usize = 100;

pub(super) async fn incident(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(paging): Query<Paging>,
) -> Response {
    let i = match s.store.incident(id).await {
        Ok(Some(i)) => i,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such incident\n").into_response(),
        Err(e) => return store_error(e),
    };
    let c = Ctx::new(&s, &headers, &who);
    let l = c.l;
    let (events, pages) = match (s.store.incident_events(id).await, s.store.pages_of(&[id]).await) {
        (Ok(e), Ok(p)) => (e, p),
        (Err(e), _) | (_, Err(e)) => return store_error(e),
    };
    let mut out = String::new();
    let title = incident_title(&s, &i);
    head(&mut out, l, &format!("{title} — {}", s.server.title));
    let _ = write!(
        out,
        "<header><h1>{}</h1><p>{}</p></header><main><p><a href=\"/\">← {}</a></p>",
        esc(&title),
        esc(verdict_text(c.lang, &i.verdict)),
        l.back
    );
    let here = format!("/incidents/{id}");
    let p: Vec<&PageRecord> = pages.iter().collect();
    incident_summary(&mut out, &s, &c, &i, &p, &here);
    if let Some(at) = i.resolved_at {
        let _ = write!(out, "<p class=\"muted\">resolved {}</p>", c.time(at));
    }
    let offset = paging.offset.unwrap_or(0);
    let _ = write!(
        out,
        "<h2>{} ({})</h2><ol class=\"timeline\" start=\"{}\">",
        l.timeline,
        events.len(),
        offset + 1
    );
    for e in events.iter().skip(offset).take(TIMELINE_PAGE) {
        let _ = write!(
            out,
            "<li>{} — <b>{}</b> {}</li>",
            c.time(e.at),
            esc(&e.kind),
            esc(&e.detail)
        );
    }
    out.push_str("</ol><p>");
    if offset > 0 {
        let _ = write!(
            out,
            "<a href=\"{here}?offset={}\">← </a> ",
            offset.saturating_sub(TIMELINE_PAGE)
        );
    }
    if events.len() > offset + TIMELINE_PAGE {
        let _ = write!(
            out,
            "<a href=\"{here}?offset={}\" rel=\"next\">{} →</a>",
            offset + TIMELINE_PAGE,
            l.more
        );
    }
    out.push_str("</p></main></body></html>");
    c.respond(out)
}

#[derive(serde::Deserialize)]
pub(super) struct AuditPaging {
    before: Option<i64>,
}

pub(super) async fn audit(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    headers: HeaderMap,
    Query(p): Query<AuditPaging>,
) -> Response {
    let c = Ctx::new(&s, &headers, &who);
    let log = match s.store.audit_log(p.before, 100).await {
        Ok(l) => l,
        Err(e) => return store_error(e),
    };
    let mut out = String::new();
    head(&mut out, c.l, &format!("{} — {}", c.l.actions, s.server.title));
    let _ = write!(
        out,
        "<header><h1>{}</h1></header><main><p><a href=\"/\">← {}</a></p><ol class=\"timeline\" id=\"audit\">",
        c.l.actions, c.l.back
    );
    for a in &log {
        let _ = write!(
            out,
            "<li>{} — <b>{}</b> {} {}{}</li>",
            c.time(a.at),
            esc(&a.actor),
            esc(&a.action),
            esc(&a.target),
            if a.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", esc(&a.reason))
            }
        );
    }
    out.push_str("</ol>");
    if let Some(last) = log.last().filter(|_| log.len() == 100) {
        let _ = write!(out, "<p><a href=\"/audit?before={}\">{} →</a></p>", last.id, c.l.older);
    }
    out.push_str("</main></body></html>");
    c.respond(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_hostile_text() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn sparkline_draws_latencies_and_marks_failures() {
        let pts = vec![
            Point {
                at: 1,
                verdict: "delivered".into(),
                latency_ms: Some(500),
            },
            Point {
                at: 2,
                verdict: "missed".into(),
                latency_ms: None,
            },
            Point {
                at: 3,
                verdict: "delivered".into(),
                latency_ms: Some(1000),
            },
        ];
        let svg = sparkline(&pts);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<circle").count(), 1);
        assert!(svg.contains("polyline points=\"0.0,12.0 120.0,2.0\""), "{svg}");
        assert_eq!(sparkline(&[]), "");
    }

    #[test]
    fn danish_labels() {
        assert_eq!(verdict_text(Language::Da, "missed"), "ikke modtaget");
        assert_eq!(verdict_text(Language::En, "expected_bounce"), "expected bounce");
    }
}
