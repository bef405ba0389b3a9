//! The JSON API (documented in docs/openapi.json, served at /api/openapi.json)
//! and the channel views the status page is drawn from.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{store_error, AppState};
use crate::config::Channel;
use crate::ledger::{Event, Incident, ProbeRecord, StoreError};
use crate::verdict::now_millis;

/// Judged probes kept per channel for the sparkline and recent failures.
pub(super) const RECENT: usize = 30;

#[derive(Serialize, Clone)]
pub(super) struct LastView {
    pub verdict: String,
    pub at: i64,
    pub latency_ms: Option<i64>,
    pub detail: String,
}

#[derive(Serialize, Clone)]
pub(super) struct Uptime {
    /// Percent of judged probes that succeeded; `None` without probes.
    pub h24: Option<f64>,
    pub d7: Option<f64>,
    pub d30: Option<f64>,
}

#[derive(Serialize, Clone)]
pub(super) struct IncidentView {
    pub id: i64,
    pub dedup_key: String,
    pub opened_at: i64,
    pub verdict: String,
    pub detail: String,
    pub failures: i64,
    pub paged: bool,
    pub silenced: Option<String>,
    pub resolved_at: Option<i64>,
    pub timeline: Vec<Event>,
}

#[derive(Serialize, Clone)]
pub(super) struct Point {
    pub at: i64,
    pub verdict: String,
    pub latency_ms: Option<i64>,
}

#[derive(Serialize, Clone)]
pub(super) struct ChannelView {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub kind: String,
    pub target: String,
    pub expect: String,
    pub inbox: Option<String>,
    pub schedule: String,
    pub deadline_ms: i64,
    pub control: bool,
    /// `ok`, `failing` or `unknown` (never probed yet).
    pub state: String,
    pub last: Option<LastView>,
    pub uptime: Uptime,
    pub pending: i64,
    pub open_incident: Option<IncidentView>,
    /// Newest judged probes, oldest first (for sparklines).
    pub recent: Vec<Point>,
    /// TLS and authentication evidence of the last 30 days' canaries; only
    /// in the view of one channel (it reads every kept path of the window).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compliance: Option<super::compliance::ComplianceView>,
    /// With `[vantage]`: each vantage's last verdict, by vantage name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vantages: Vec<super::vantages::VantageView>,
}

fn percent((total, ok): (i64, i64)) -> Option<f64> {
    (total > 0).then(|| (ok as f64) * 100.0 / (total as f64))
}

fn target(ch: &Channel) -> String {
    ch.kind.target()
}

pub(super) async fn incident_view(s: &AppState, i: &Incident) -> Result<IncidentView, StoreError> {
    Ok(IncidentView {
        timeline: s.store.incident_events(i.id).await?,
        ..incident_head(i)
    })
}

/// An incident's view without its timeline.
fn incident_head(i: &Incident) -> IncidentView {
    IncidentView {
        id: i.id,
        dedup_key: i.dedup_key.clone(),
        opened_at: i.opened_at,
        verdict: i.verdict.clone(),
        detail: i.detail.clone(),
        failures: i.failures,
        paged: i.paged,
        silenced: i.silenced.clone(),
        resolved_at: i.resolved_at,
        timeline: Vec::new(),
    }
}

/// Views of the given channels (all when `only` is `None`), in config order.
pub(super) async fn views(s: &AppState, only: Option<&str>) -> Result<Vec<ChannelView>, StoreError> {
    let config = s.config();
    let ids: Vec<String> = config
        .channels
        .iter()
        .filter(|c| only.is_none_or(|id| c.id == id))
        .map(|c| c.id.clone())
        .collect();
    views_for(s, &ids).await
}

/// Full views (uptime, sparkline, open incident) of the named channels, in
/// that order; unknown ids are left out. Costs a few reads per channel: for
/// the rows a page shows, not for all channels at once.
pub(super) async fn views_for(s: &AppState, ids: &[String]) -> Result<Vec<ChannelView>, StoreError> {
    views_with(s, ids, None).await
}

/// [`views_for`] for the status page's channel rows, which show no incident
/// timeline: the open incidents are the ones the page already read, and
/// their timelines are not read (a long incident has hundreds of events).
pub(super) async fn views_for_rows(
    s: &AppState,
    ids: &[String],
    open: &HashMap<String, Incident>,
) -> Result<Vec<ChannelView>, StoreError> {
    views_with(s, ids, Some(open)).await
}

async fn views_with(
    s: &AppState,
    ids: &[String],
    known_open: Option<&HashMap<String, Incident>>,
) -> Result<Vec<ChannelView>, StoreError> {
    let config = s.config();
    let channels: Vec<&Channel> = ids.iter().filter_map(|id| config.channel(id)).collect();
    let ids: Vec<String> = channels.iter().map(|c| c.id.clone()).collect();
    let single = ids.len() == 1;
    let statuses = s.store.channel_status(&ids, now_millis(), RECENT).await?;
    let read: HashMap<String, Incident>;
    let open = match known_open {
        Some(known) => known,
        None => {
            read = s
                .store
                .open_incidents()
                .await?
                .into_iter()
                .map(|i| (i.channel.clone(), i))
                .collect();
            &read
        }
    };
    let mut out = Vec::with_capacity(channels.len());
    for (ch, st) in channels.into_iter().zip(statuses) {
        let incident = match open.get(&ch.id) {
            Some(i) if known_open.is_some() => Some(incident_head(i)),
            Some(i) => Some(incident_view(s, i).await?),
            None => None,
        };
        let last = st.recent.first().map(|p| LastView {
            verdict: p.verdict.to_string(),
            at: p.judged_at.unwrap_or(p.created_at),
            latency_ms: p.latency_ms,
            detail: p.detail.clone().unwrap_or_default(),
        });
        // The 30-day compliance summary reads each kept path: for one
        // channel's own view, not for lists of many.
        let compliance = match single {
            true => Some(super::compliance::view(s, ch, now_millis()).await?),
            false => None,
        };
        let state = match (&incident, st.recent.first()) {
            (Some(_), _) => "failing",
            (None, Some(p)) if p.verdict.is_success() => "ok",
            (None, Some(_)) => "failing",
            (None, None) => "unknown",
        };
        let vantages = match config.vantage {
            Some(_) => super::vantages::per_vantage(&st.recent),
            None => Vec::new(),
        };
        out.push(ChannelView {
            vantages,
            id: ch.id.clone(),
            name: ch.name.clone(),
            owner: ch.owner.clone(),
            kind: ch.kind.name().to_string(),
            target: target(ch),
            expect: ch.expect.as_str().to_string(),
            inbox: ch.inbox.clone(),
            schedule: ch.schedule.to_string(),
            deadline_ms: i64::try_from(ch.deadline.as_millis()).unwrap_or(i64::MAX),
            control: ch.control,
            state: state.to_string(),
            last,
            uptime: Uptime {
                h24: percent(st.window_24h),
                d7: percent(st.window_7d),
                d30: percent(st.window_30d),
            },
            pending: st.pending,
            open_incident: incident,
            recent: st
                .recent
                .iter()
                .rev()
                .map(|p| Point {
                    at: p.created_at,
                    verdict: p.verdict.to_string(),
                    latency_ms: p.latency_ms,
                })
                .collect(),
            compliance,
        });
    }
    Ok(out)
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": format!("no channel {id:?}") })),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(super) struct ChannelPage {
    /// At most this many channels (default 1000, at most 10,000).
    limit: Option<usize>,
    /// The channels after this id, in config order (the `next` link carries it).
    after: Option<String>,
}

pub(super) async fn channels(State(s): State<AppState>, Query(q): Query<ChannelPage>) -> Response {
    let config = s.config();
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let start = match q.after.as_deref() {
        None => 0,
        Some(a) => match config.channels.iter().position(|c| c.id == a) {
            Some(i) => i + 1,
            None => return not_found(a),
        },
    };
    let ids: Vec<String> = config
        .channels
        .iter()
        .skip(start)
        .take(limit)
        .map(|c| c.id.clone())
        .collect();
    let more = config.channels.len() > start + ids.len();
    match views_for(&s, &ids).await {
        Ok(v) => {
            let mut resp = Json(v).into_response();
            if let (true, Some(last)) = (more, ids.last()) {
                let next = format!(
                    "</api/channels?limit={limit}&after={}>; rel=\"next\"",
                    percent_encoding::utf8_percent_encode(last, percent_encoding::NON_ALPHANUMERIC)
                );
                if let Ok(h) = header::HeaderValue::from_str(&next) {
                    resp.headers_mut().insert(header::LINK, h);
                }
            }
            resp
        }
        Err(e) => store_error(e),
    }
}

pub(super) async fn channel(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    match views(&s, Some(&id)).await {
        Ok(mut v) if !v.is_empty() => Json(v.remove(0)).into_response(),
        Ok(_) => not_found(&id),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
pub(super) struct Since {
    /// RFC 3339 time or milliseconds since the epoch; default: 24 hours ago.
    since: Option<String>,
    limit: Option<usize>,
    /// `created_at:id` of the oldest probe already seen: the page before it,
    /// newest first (instead of `since`).
    before: Option<String>,
}

/// A probe as the API shows it.
#[derive(Serialize)]
struct ProbeView<'a> {
    #[serde(flatten)]
    probe: &'a ProbeRecord,
    events: Vec<Event>,
    /// The path its arrival kept, and how it meets the channel's policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<crate::compliance::KeptPath>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compliance: Option<crate::compliance::Assessment>,
}

pub(super) async fn probes(State(s): State<AppState>, Path(id): Path<String>, Query(q): Query<Since>) -> Response {
    if s.config().channel(&id).is_none() {
        return not_found(&id);
    }
    if let Some(b) = q.before.as_deref() {
        let Some(cursor) = b
            .split_once(':')
            .and_then(|(t, i)| t.parse::<i64>().ok().map(|t| (t, i.to_string())))
        else {
            let msg = format!("before={b:?}: use created_at:id of a probe, as the previous page ends");
            return (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": msg }))).into_response();
        };
        let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
        return match s.store.probes_before(&id, Some(cursor), limit).await {
            Ok(p) => with_events(&s, &p).await,
            Err(e) => store_error(e),
        };
    }
    let since = match q.since.as_deref() {
        None => now_millis() - 86_400_000,
        Some(t) => match t.parse::<i64>() {
            Ok(ms) => ms,
            Err(_) => match chrono::DateTime::parse_from_rfc3339(t) {
                Ok(d) => d.timestamp_millis(),
                Err(_) => {
                    let msg =
                        format!("since={t:?}: use RFC 3339 (2026-11-22T10:00:00Z) or milliseconds since the epoch");
                    return (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": msg }))).into_response();
                }
            },
        },
    };
    let limit = q.limit.unwrap_or(1000).min(10_000);
    let probes = match s.store.probes_since(&id, since, limit).await {
        Ok(p) => p,
        Err(e) => return store_error(e),
    };
    with_events(&s, &probes).await
}

/// Probes with their evidence trails (and the compliance of their kept
/// paths), as the API shows them.
async fn with_events(s: &AppState, probes: &[ProbeRecord]) -> Response {
    let config = s.config();
    let mut out = Vec::with_capacity(probes.len());
    for p in probes {
        let ch = config.channel(&p.channel);
        match s.store.events(&p.id).await {
            Ok(events) => {
                let path = crate::incident::compliance::kept_path(&events);
                let compliance = match (&path, ch) {
                    (Some(k), Some(ch)) => Some(crate::compliance::assess(k, &config.our_side(ch), &ch.policy)),
                    _ => None,
                };
                out.push(ProbeView {
                    probe: p,
                    events,
                    path,
                    compliance,
                })
            }
            Err(e) => return store_error(e),
        }
    }
    Json(out).into_response()
}

pub(super) async fn incidents(State(s): State<AppState>) -> Response {
    let list = match s.store.recent_incidents(100).await {
        Ok(l) => l,
        Err(e) => return store_error(e),
    };
    let mut out = Vec::with_capacity(list.len());
    for i in &list {
        match incident_view(&s, i).await {
            Ok(view) => out.push(IncidentListItem {
                channel: i.channel.clone(),
                open: i.resolved_at.is_none(),
                view,
            }),
            Err(e) => return store_error(e),
        }
    }
    Json(out).into_response()
}

#[derive(Serialize)]
struct IncidentListItem {
    channel: String,
    open: bool,
    #[serde(flatten)]
    view: IncidentView,
}

const OPENAPI: &str = include_str!("../../docs/openapi.json");

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
