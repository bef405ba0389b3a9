//! The staff status page: server-rendered HTML with inline CSS and SVG, no
//! JavaScript. Every text that comes from outside (server replies, channel
//! names) is escaped.

use super::escape::esc;
use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::api::{views, ChannelView, IncidentView, Point};
use super::{store_error, AppState};
use crate::config::Language;
use crate::verdict::{human_ms, now_millis};

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
    recent_failures: &'static str,
    none_open: &'static str,
    watcher_blind: &'static str,
    since: &'static str,
    none_failed: &'static str,
    ok: &'static str,
    failing: &'static str,
    unknown: &'static str,
    opened: &'static str,
    updated: &'static str,
    history: &'static str,
    time: &'static str,
    verdict: &'static str,
    detail: &'static str,
    target: &'static str,
    back: &'static str,
    channels_failing: &'static str,
    silenced: &'static str,
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
    recent_failures: "Recent failures",
    none_open: "No open incidents.",
    watcher_blind: "Not watched: inbox watcher",
    since: "since",
    none_failed: "No failures among the recent probes.",
    ok: "OK",
    failing: "FAILING",
    unknown: "NOT YET PROBED",
    opened: "opened",
    updated: "Updated",
    history: "Probe history",
    time: "Time",
    verdict: "Verdict",
    detail: "Detail",
    target: "Target",
    back: "All channels",
    channels_failing: "channels failing",
    silenced: "maintenance window",
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
    recent_failures: "Seneste fejl",
    none_open: "Ingen åbne hændelser.",
    watcher_blind: "Overvåges ikke: indbakke-overvåger",
    since: "siden",
    none_failed: "Ingen fejl blandt de seneste målinger.",
    ok: "OK",
    failing: "FEJLER",
    unknown: "IKKE MÅLT ENDNU",
    opened: "åbnet",
    updated: "Opdateret",
    history: "Målehistorik",
    time: "Tid",
    verdict: "Resultat",
    detail: "Detaljer",
    target: "Mål",
    back: "Alle kanaler",
    channels_failing: "kanaler fejler",
    silenced: "vedligeholdelsesvindue",
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
        other => other,
    }
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string())
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
header{background:#1b3a5c;color:#fff;padding:14px 18px}header h1{margin:0;font-size:20px}header p{margin:4px 0 0;opacity:.85;font-size:13px}
main{padding:12px 18px;max-width:1200px;margin:auto}h2{font-size:17px;margin:22px 0 8px}
table{width:100%;border-collapse:collapse;background:#fff;border:1px solid #dde1e6}th,td{text-align:left;padding:7px 9px;border-bottom:1px solid #eceef1;vertical-align:top}
th{font-size:12px;text-transform:uppercase;color:#57606a;background:#fafbfc}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-weight:600;font-size:12px;white-space:nowrap}
.ok{background:#dafbe1;color:#116329}.failing{background:#ffebe9;color:#a40e26}.unknown{background:#eaeef2;color:#57606a}
.spark{color:#0969da}.spark .bad{fill:#cf222e}.incident{background:#fff;border:1px solid #f1aeb5;border-left:5px solid #cf222e;padding:10px 12px;margin:8px 0}
.incident h3{margin:0 0 6px;font-size:15px}.timeline{margin:6px 0 0;padding-left:18px;font-size:13px;color:#444}.muted{color:#57606a;font-size:13px}.blind{background:#fff1f0;border-left:4px solid #cf222e;padding:6px 10px}
.detail{font-size:13px;color:#444;word-break:break-word}a{color:#0969da}
@media (max-width:700px){table,thead,tbody,tr,td{display:block}thead{display:none}tr{border-bottom:2px solid #dde1e6;padding:6px 0}
td{border:none;padding:3px 10px}td[data-l]::before{content:attr(data-l) ': ';font-weight:600;color:#57606a;font-size:12px}}
";

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
        _ => l.unknown,
    };
    format!("<span class=\"badge {}\">{text}</span>", esc(state))
}

fn incident_block(out: &mut String, l: &Labels, lang: Language, v: &ChannelView, i: &IncidentView) {
    let _ = write!(
        out,
        "<div class=\"incident\" data-channel=\"{}\"><h3><a href=\"/channels/{}\">{}</a> — {}</h3><div class=\"muted\">{} {} · {}{}</div><div class=\"detail\">{}</div><ol class=\"timeline\">",
        esc(&v.id),
        esc(&v.id),
        esc(&v.name),
        esc(verdict_text(lang, &i.verdict)),
        l.opened,
        time(i.opened_at),
        esc(&i.dedup_key),
        if i.silenced.is_some() { format!(" · {}", l.silenced) } else { String::new() },
        esc(&i.detail),
    );
    for e in &i.timeline {
        let _ = write!(
            out,
            "<li>{} — <b>{}</b> {}</li>",
            time(e.at),
            esc(&e.kind),
            esc(&e.detail)
        );
    }
    out.push_str("</ol></div>");
}

/// The whole status page.
pub(super) fn render_index(
    title: &str,
    lang: Language,
    views: &[ChannelView],
    blind: &[(String, crate::verdict::Millis, String)],
    others: &[crate::ledger::Incident],
) -> String {
    let l = labels(lang);
    let mut out = String::with_capacity(2048 + views.len() * 900);
    head(&mut out, l, title);
    let failing = views.iter().filter(|v| v.state == "failing").count();
    let _ = write!(
        out,
        "<header><h1>{} — {}</h1><p>{} {} · {} / {} {}</p></header><main>",
        esc(title),
        l.status,
        l.updated,
        time(now_millis()),
        failing,
        views.len(),
        l.channels_failing
    );

    for (name, since, why) in blind {
        let _ = write!(
            out,
            "<p class=\"blind\" role=\"alert\">{} <b>{}</b> — {} {}: {}</p>",
            l.watcher_blind,
            esc(name),
            l.since,
            time(*since),
            esc(why)
        );
    }
    let _ = write!(out, "<h2>{}</h2>", l.open_incidents);
    let open: Vec<&ChannelView> = views.iter().filter(|v| v.open_incident.is_some()).collect();
    if open.is_empty() && others.is_empty() {
        let _ = write!(out, "<p class=\"muted\">{}</p>", l.none_open);
    }
    // Incidents that are no channel's: postcanary's own paths, DNS drift, discovery.
    for i in others {
        let _ = write!(
            out,
            "<div class=\"incident\" data-channel=\"{}\"><h3>{}</h3><div class=\"muted\">{} {} · {}×</div><div class=\"detail\">{}</div></div>",
            esc(&i.channel),
            esc(&other_incident_title(&i.channel)),
            l.opened,
            time(i.opened_at),
            i.failures,
            esc(&i.detail)
        );
    }
    for v in open {
        if let Some(i) = &v.open_incident {
            incident_block(&mut out, l, lang, v, i);
        }
    }

    let mut owners: Vec<&str> = views.iter().map(|v| v.owner.as_str()).collect();
    owners.sort_unstable();
    owners.dedup();
    for owner in owners {
        let _ = write!(
            out,
            "<h2>{}: {}</h2><table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
            l.owner,
            esc(owner),
            l.channel,
            l.state,
            l.last,
            l.latency,
            l.uptime,
            l.trend
        );
        for v in views.iter().filter(|v| v.owner == owner) {
            let last = v
                .last
                .as_ref()
                .map(|x| {
                    format!(
                        "{} <span class=\"muted\">{}</span>",
                        esc(verdict_text(lang, &x.verdict)),
                        time(x.at)
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
                "<tr data-channel=\"{}\" data-state=\"{}\"><td data-l=\"{}\"><a href=\"/channels/{}\">{}</a><div class=\"muted\">{}</div></td>\
                 <td data-l=\"{}\">{}</td><td data-l=\"{}\">{}</td><td data-l=\"{}\">{}</td><td data-l=\"{}\">{} / {} / {}</td><td data-l=\"{}\">{}</td></tr>",
                esc(&v.id),
                esc(&v.state),
                l.channel,
                esc(&v.id),
                esc(&v.name),
                esc(&v.target),
                l.state,
                badge(l, &v.state),
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

    let _ = write!(out, "<h2>{}</h2>", l.recent_failures);
    let mut failures: Vec<(&ChannelView, &Point)> = views
        .iter()
        .flat_map(|v| v.recent.iter().filter(|p| !is_success(&p.verdict)).map(move |p| (v, p)))
        .collect();
    failures.sort_by_key(|f| std::cmp::Reverse(f.1.at));
    if failures.is_empty() {
        let _ = write!(out, "<p class=\"muted\">{}</p>", l.none_failed);
    } else {
        let _ = write!(
            out,
            "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
            l.time, l.channel, l.verdict
        );
        for (v, p) in failures.iter().take(25) {
            let _ = write!(
                out,
                "<tr><td data-l=\"{}\">{}</td><td data-l=\"{}\"><a href=\"/channels/{}\">{}</a></td><td data-l=\"{}\">{}</td></tr>",
                l.time,
                time(p.at),
                l.channel,
                esc(&v.id),
                esc(&v.name),
                l.verdict,
                esc(verdict_text(lang, &p.verdict))
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</main></body></html>");
    out
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

pub(super) async fn index(State(s): State<AppState>) -> Response {
    let others = match s.store.open_incidents().await {
        Ok(all) => all
            .into_iter()
            .filter(|i| s.config.channel(&i.channel).is_none())
            .collect::<Vec<_>>(),
        Err(e) => return store_error(e),
    };
    match views(&s, None).await {
        Ok(v) => Html(render_index(
            &s.server.title,
            s.server.language,
            &v,
            &s.blind_watchers(),
            &others,
        ))
        .into_response(),
        Err(e) => store_error(e),
    }
}

pub(super) async fn channel(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let lang = s.server.language;
    let l = labels(lang);
    let v = match views(&s, Some(&id)).await {
        Ok(mut v) if !v.is_empty() => v.remove(0),
        Ok(_) => return (StatusCode::NOT_FOUND, "no such channel\n").into_response(),
        Err(e) => return store_error(e),
    };
    let history = match s.store.recent_probes(&id, 200).await {
        Ok(h) => h,
        Err(e) => return store_error(e),
    };
    let mut out = String::new();
    head(&mut out, l, &format!("{} — {}", v.name, s.server.title));
    let _ = write!(
        out,
        "<header><h1>{}</h1><p>{} · {}: {} · {}</p></header><main><p><a href=\"/\">← {}</a></p><p>{} {}</p><p>{}: {} / {} / {}</p>",
        esc(&v.name),
        esc(&v.id),
        l.target,
        esc(&v.target),
        esc(&v.owner),
        l.back,
        badge(l, &v.state),
        sparkline(&v.recent),
        l.uptime,
        pct(v.uptime.h24),
        pct(v.uptime.d7),
        pct(v.uptime.d30)
    );
    if let Some(i) = &v.open_incident {
        incident_block(&mut out, l, lang, &v, i);
    }
    if let Some(c) = &v.compliance {
        out.push_str(&super::compliance::html(lang, c));
    }
    let _ = write!(
        out,
        "<h2>{}</h2><table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        l.history, l.time, l.verdict, l.latency, l.detail
    );
    for p in &history {
        let _ = write!(
            out,
            "<tr data-verdict=\"{}\"><td data-l=\"{}\">{}</td><td data-l=\"{}\">{}</td><td data-l=\"{}\">{}</td><td data-l=\"{}\" class=\"detail\">{}<div class=\"muted\">{}</div></td></tr>",
            esc(p.verdict.as_str()),
            l.time,
            time(p.created_at),
            l.verdict,
            esc(verdict_text(lang, p.verdict.as_str())),
            l.latency,
            p.latency_ms.map(human_ms).unwrap_or_else(|| "–".into()),
            l.detail,
            esc(p.detail.as_deref().unwrap_or("")),
            esc(&p.token)
        );
    }
    out.push_str("</tbody></table></main></body></html>");
    Html(out).into_response()
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
