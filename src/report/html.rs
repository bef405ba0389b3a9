//! The HTML report and evidence page: one self-contained document each —
//! inline CSS, inline SVG charts, no scripts, no external resources — laid
//! out to print on A4 (tables repeat their headers, sections do not split).
//! Everything from the ledger or the config is escaped.

use super::figures::{days_of, DayReport, IncidentReport, Period, Report};
use super::{dur, pct, when};
use crate::verdict::human_ms;

/// HTML-escapes text (for element content and quoted attribute values).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) const CSS: &str = r#"
@page { size: A4; margin: 14mm 12mm; }
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font: 10.5pt/1.4 "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; color: #1b1f24; margin: 0 auto; max-width: 190mm; padding: 8mm 0; }
h1 { font-size: 18pt; margin: 0 0 2mm; }
h2 { font-size: 13pt; margin: 7mm 0 2mm; border-bottom: 1px solid #c9d1d9; padding-bottom: 1mm; }
h3 { font-size: 11pt; margin: 4mm 0 1mm; }
p.meta { color: #57606a; margin: 0 0 3mm; }
table { border-collapse: collapse; width: 100%; margin: 1mm 0 3mm; font-size: 9pt; }
thead { display: table-header-group; }
tr { break-inside: avoid; page-break-inside: avoid; }
th, td { text-align: left; padding: 1.2mm 1.6mm; border-bottom: 1px solid #d8dee4; vertical-align: top; }
th { background: #f1f3f5; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
section.channel { break-inside: avoid; page-break-inside: avoid; margin-bottom: 5mm; }
.ok { color: #1a7f37; } .warn { color: #9a6700; } .bad { color: #cf222e; }
.note { color: #57606a; font-size: 9pt; }
code, .mono { font-family: "DejaVu Sans Mono", monospace; font-size: 8.5pt; word-break: break-all; }
svg { display: block; margin: 1mm 0 2mm; }
.probe { break-inside: avoid; page-break-inside: avoid; border: 1px solid #d8dee4; border-radius: 2mm; padding: 2mm 3mm; margin: 0 0 3mm; }
"#;

pub(super) fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{CSS}</style></head>\n<body>\n{body}</body></html>\n",
        esc(title)
    )
}

pub(super) fn class_of(p: Option<f64>) -> &'static str {
    match p {
        Some(p) if p >= 99.5 => "ok",
        Some(p) if p >= 95.0 => "warn",
        Some(_) => "bad",
        None => "",
    }
}

pub(super) fn colour_of(p: Option<f64>) -> &'static str {
    match p {
        Some(p) if p >= 99.5 => "#2da44e",
        Some(p) if p >= 95.0 => "#d4a72c",
        Some(_) => "#cf222e",
        None => "#d0d7de",
    }
}

/// A bar per UTC day of the period: height is the day's availability.
pub fn day_chart(period: &Period, days: &[DayReport]) -> String {
    let all = days_of(period);
    let (w, h, left, bottom) = (640.0_f64, 90.0_f64, 34.0_f64, 16.0_f64);
    let n = all.len().max(1) as f64;
    let step = (w - left) / n;
    let bar = (step * 0.8).max(1.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"100%\" viewBox=\"0 -8 {w} {}\" role=\"img\" aria-label=\"availability per day\">",
        h + bottom + 8.0
    );
    for (y, label) in [(0.0, "100%"), (h / 2.0, "50%"), (h, "0%")] {
        s.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{w}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#d8dee4\" stroke-width=\"0.5\"/><text x=\"{}\" y=\"{}\" font-size=\"8\" text-anchor=\"end\" fill=\"#57606a\">{label}</text>",
            left - 3.0,
            y + 3.0
        ));
    }
    for (i, d) in all.iter().enumerate() {
        let x = left + i as f64 * step + (step - bar) / 2.0;
        let day = days.iter().find(|r| r.day == *d);
        let p = day.and_then(|r| r.availability.percent);
        let (bh, title) = match (day, p) {
            (Some(r), Some(p)) => (
                (p / 100.0 * h).max(1.0),
                format!(
                    "{}: {:.2}% ({}/{})",
                    r.date, p, r.availability.successful, r.availability.judged
                ),
            ),
            _ => (2.0, format!("{}: no judged probes", super::figures::date(*d))),
        };
        s.push_str(&format!(
            "<rect x=\"{x:.2}\" y=\"{:.2}\" width=\"{bar:.2}\" height=\"{bh:.2}\" fill=\"{}\"><title>{}</title></rect>",
            h - bh,
            colour_of(p),
            esc(&title)
        ));
    }
    if let (Some(first), Some(last)) = (all.first(), all.last()) {
        s.push_str(&format!(
            "<text x=\"{left}\" y=\"{}\" font-size=\"8\" fill=\"#57606a\">{}</text><text x=\"{w}\" y=\"{}\" font-size=\"8\" text-anchor=\"end\" fill=\"#57606a\">{}</text>",
            h + 12.0,
            super::figures::date(*first),
            h + 12.0,
            super::figures::date(*last)
        ));
    }
    s.push_str("</svg>");
    s
}

pub(super) fn incident_rows(incidents: &[IncidentReport], with_channel: bool) -> String {
    let mut s = String::from("<table><thead><tr><th>#</th>");
    if with_channel {
        s.push_str("<th>Channel</th>");
    }
    s.push_str("<th>Verdict</th><th>Opened</th><th>Resolved</th><th class=\"n\">Detect</th><th class=\"n\">Ack</th><th class=\"n\">Resolve</th><th class=\"n\">Pages</th></tr></thead><tbody>");
    for i in incidents {
        let mut opened = esc(&when(i.opened_at));
        if i.opened_before_period {
            opened.push_str(" <span class=\"note\">(before the period)</span>");
        }
        s.push_str(&format!("<tr><td>{}</td>", i.id));
        if with_channel {
            s.push_str(&format!("<td>{}</td>", esc(&i.channel)));
        }
        s.push_str(&format!(
            "<td>{}<div class=\"note\">{}</div></td><td>{opened}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&i.verdict),
            esc(&i.detail),
            esc(&i.resolved_at.map(when).unwrap_or_else(|| "open".into())),
            esc(&dur(i.time_to_detect_ms)),
            esc(&dur(i.time_to_acknowledge_ms)),
            esc(&dur(i.time_to_resolve_ms)),
            i.pages_sent
        ));
    }
    s.push_str("</tbody></table>");
    s
}

/// The report as one HTML page.
pub fn report(r: &Report) -> String {
    let mut b = String::new();
    b.push_str(&format!(
        "<h1>Delivery report</h1><p class=\"meta\">{}: {} \u{2192} {} (UTC) \u{00b7} made {}</p>",
        esc(&r.period.label),
        esc(&when(r.period.from)),
        esc(&when(r.period.to)),
        esc(&when(r.generated_at))
    ));
    b.push_str("<h2>Owners</h2><table><thead><tr><th>Owner</th><th class=\"n\">Channels</th><th class=\"n\">Availability</th><th class=\"n\">OK / judged</th><th class=\"n\">Incidents</th><th class=\"n\">Pages</th><th class=\"n\">MTTD</th><th class=\"n\">MTTA</th><th class=\"n\">MTTR</th></tr></thead><tbody>");
    for o in &r.owners {
        let s = &o.summary;
        b.push_str(&format!(
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n {}\">{}</td><td class=\"n\">{}/{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&o.owner),
            o.channels.len(),
            class_of(s.availability.percent),
            esc(&pct(s.availability.percent)),
            s.availability.successful,
            s.availability.judged,
            s.incidents_opened,
            s.pages_sent,
            esc(&dur(s.mean_time_to_detect_ms)),
            esc(&dur(s.mean_time_to_acknowledge_ms)),
            esc(&dur(s.mean_time_to_resolve_ms)),
        ));
    }
    b.push_str("</tbody></table>");
    for o in &r.owners {
        b.push_str(&format!(
            "<section class=\"channel\"><h3>{} <span class=\"note\">all channels, per day</span></h3>{}</section>",
            esc(&o.owner),
            day_chart(&r.period, &o.days)
        ));
    }
    b.push_str("<h2>Channels</h2><table><thead><tr><th>Channel</th><th>Owner</th><th class=\"n\">Availability</th><th class=\"n\">OK / judged</th><th class=\"n\">Pending</th><th class=\"n\">Incidents</th><th class=\"n\">Compliance findings</th><th class=\"n\">Pages</th><th class=\"n\">MTTD</th><th class=\"n\">MTTR</th></tr></thead><tbody>");
    for c in &r.channels {
        let s = &c.summary;
        b.push_str(&format!(
            "<tr><td>{}<div class=\"note mono\">{}</div></td><td>{}</td><td class=\"n {}\">{}</td><td class=\"n\">{}/{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&c.name),
            esc(&c.id),
            esc(&c.owner),
            class_of(s.availability.percent),
            esc(&pct(s.availability.percent)),
            s.availability.successful,
            s.availability.judged,
            s.availability.pending,
            s.incidents_opened,
            s.compliance_findings,
            s.pages_sent,
            esc(&dur(s.mean_time_to_detect_ms)),
            esc(&dur(s.mean_time_to_resolve_ms)),
        ));
    }
    b.push_str("</tbody></table>");
    for c in &r.channels {
        let s = &c.summary;
        b.push_str(&format!(
            "<section class=\"channel\"><h3>{} <span class=\"note mono\">{}</span></h3><p class=\"meta\">Owner {} \u{00b7} availability <span class=\"{}\">{}</span> ({} of {} judged probes; {} errors of postcanary's own; {} pending) \u{00b7} mean latency {}</p>",
            esc(&c.name),
            esc(&c.id),
            esc(&c.owner),
            class_of(s.availability.percent),
            esc(&pct(s.availability.percent)),
            s.availability.successful,
            s.availability.judged,
            s.availability.errors,
            s.availability.pending,
            esc(&dur(s.availability.mean_latency_ms)),
        ));
        b.push_str(&day_chart(&r.period, &c.days));
        if !c.vantages.is_empty() {
            let parts: Vec<String> = c
                .vantages
                .iter()
                .map(|v| {
                    format!(
                        "{} <span class=\"{}\">{}</span> ({}/{})",
                        esc(&v.vantage),
                        class_of(v.availability.percent),
                        esc(&pct(v.availability.percent)),
                        v.availability.successful,
                        v.availability.judged
                    )
                })
                .collect();
            b.push_str(&format!(
                "<p class=\"meta\">Per vantage point: {}</p>",
                parts.join(" \u{00b7} ")
            ));
        }
        let rt = &c.retention;
        if rt.kept + rt.lost + rt.altered > 0 {
            b.push_str(&format!(
                "<p class=\"meta\">Retention checks: {} kept \u{00b7} <span class=\"{}\">{} lost \u{00b7} {} altered</span></p>",
                rt.kept,
                if rt.lost + rt.altered > 0 { "bad" } else { "ok" },
                rt.lost,
                rt.altered
            ));
        }
        if !c.compliance_incidents.is_empty() {
            b.push_str("<p class=\"meta\">Compliance findings (the canary arrived; its path broke the policy):</p>");
            b.push_str(&incident_rows(&c.compliance_incidents, false));
        }
        if c.incidents.is_empty() {
            b.push_str("<p class=\"note\">No incident in the period.</p>");
        } else {
            b.push_str(&incident_rows(&c.incidents, false));
        }
        b.push_str("</section>");
    }
    if !r.vantages.is_empty() {
        b.push_str("<h2>Vantage points</h2><table><thead><tr><th>Vantage</th><th class=\"n\">Availability</th><th class=\"n\">OK / judged</th><th class=\"n\">Errors</th><th class=\"n\">Pending</th><th class=\"n\">Vantage incidents</th></tr></thead><tbody>");
        for v in &r.vantages {
            let a = &v.availability;
            b.push_str(&format!(
                "<tr><td>{}</td><td class=\"n {}\">{}</td><td class=\"n\">{}/{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&v.vantage),
                class_of(a.percent),
                esc(&pct(a.percent)),
                a.successful,
                a.judged,
                a.errors,
                a.pending,
                v.incidents.len()
            ));
        }
        b.push_str("</tbody></table>");
        for v in r.vantages.iter().filter(|v| !v.incidents.is_empty()) {
            b.push_str(&format!(
                "<section class=\"channel\"><h3>{} <span class=\"note\">vantage degraded</span></h3>{}</section>",
                esc(&v.vantage),
                incident_rows(&v.incidents, true)
            ));
        }
    }
    if !r.other_incidents.is_empty() {
        b.push_str("<h2>Incidents of postcanary itself, DNS and discovery</h2>");
        b.push_str(&incident_rows(&r.other_incidents, true));
    }
    b.push_str("<h2>Inbox watchers</h2><table><thead><tr><th>Watcher</th><th>Inbox</th><th class=\"n\">Blind spells</th><th class=\"n\">Blind in total</th><th class=\"n\">Longest</th><th>Longest from</th><th>Why</th></tr></thead><tbody>");
    for w in &r.watchers {
        let l = w.longest.as_ref();
        b.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&w.watcher),
            esc(&w.inbox),
            w.spells,
            esc(&human_ms(w.blind_ms)),
            esc(&l.map(|l| human_ms(l.ms)).unwrap_or_else(|| "\u{2014}".into())),
            esc(&l.map(|l| when(l.since)).unwrap_or_default()),
            esc(&l.map(|l| l.why.clone()).unwrap_or_default()),
        ));
    }
    b.push_str("</tbody></table>");
    b.push_str("<h2>Notes</h2><ul class=\"note\">");
    for n in &r.notes {
        b.push_str(&format!("<li>{}</li>", esc(n)));
    }
    b.push_str("<li>Availability is successful / judged probes by the UTC day each probe was created; time to detect runs from the first failing probe's send to the first trigger page a notifier accepted; time to resolve from that send to the resolution. Every definition is in postcanary's docs/report.md.</li></ul>");
    page(&format!("postcanary report, {}", r.period.label), &b)
}

pub(super) fn opt_when(t: Option<i64>) -> String {
    t.map(when).unwrap_or_else(|| "\u{2014}".into())
}
