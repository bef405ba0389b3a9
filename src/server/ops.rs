//! Operating postcanary from the page and the API: acknowledge an incident,
//! silence a channel or an owner for a while, end a silence, reload the
//! config; and the CSV download of a channel's probes. Acting needs the
//! `operator` role; every action is an audit row in the ledger.
//!
//! The API takes JSON (a browser cannot send that across sites without
//! CORS, which this server never allows). The page's forms are
//! CSRF-protected twice: a random token in a `SameSite=Strict` cookie that
//! the form repeats in a hidden field (double submit), and an `Origin` (or
//! `Referer`) that must be this server's own host.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form, Json};
use serde::Deserialize;

use super::{same, store_error, AppState, Identity};
use crate::config::{HumanDuration, Role};
use crate::ledger::{Acknowledgement, NewSilence, SilenceRecord, StoreError};
use crate::verdict::now_millis;

/// The cookie that carries the form token.
pub(super) const CSRF_COOKIE: &str = "pc_csrf";
/// Longest silence that can be set at run time.
const MAX_SILENCE_MS: i64 = 90 * 86_400_000;
/// Longest reason kept.
const MAX_REASON: usize = 500;

/// Why an action was refused, with the status it answers.
#[derive(Debug)]
pub(super) struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        tracing::error!(error = %e, "an action could not use the ledger");
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the ledger cannot be written right now",
        )
    }
}

fn json_refusal(r: Refusal) -> Response {
    (r.status, Json(serde_json::json!({ "error": r.message }))).into_response()
}

fn text_refusal(r: Refusal) -> Response {
    let body = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>Refused</title><p>{}</p><p><a href=\"/\">Back</a></p>",
        super::escape::esc(&r.message)
    );
    (r.status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn operator(who: &Identity, what: &str) -> Result<(), Refusal> {
    if who.role == Role::Operator {
        return Ok(());
    }
    let msg = if who.name == "anonymous" {
        format!("{what} needs an operator: configure a [[server.user]] with role = \"operator\"")
    } else {
        format!("{what} needs the operator role; {} is a viewer", who.name)
    };
    Err(Refusal::new(StatusCode::FORBIDDEN, msg))
}

fn reason(raw: Option<&str>, required: bool) -> Result<String, Refusal> {
    let r: String = raw.unwrap_or("").trim().chars().filter(|c| !c.is_control()).collect();
    if required && r.is_empty() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "give a reason (it goes into the audit log)",
        ));
    }
    Ok(r.chars().take(MAX_REASON).collect())
}

pub(super) async fn acknowledge(s: &AppState, who: &Identity, id: i64, note: &str) -> Result<(), Refusal> {
    operator(who, "acknowledging")?;
    let Some(open) = s.store.incident(id).await? else {
        return Err(Refusal::new(StatusCode::NOT_FOUND, format!("no incident {id}")));
    };
    if open.resolved_at.is_some() {
        return Err(Refusal::new(StatusCode::CONFLICT, format!("incident {id} is resolved")));
    }
    if let Some(by) = &open.acknowledged_by {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            format!("incident {id} was already acknowledged by {by}"),
        ));
    }
    let now = now_millis();
    let pages =
        crate::incident::acknowledge_pages(&s.config(), &open, &who.name, note, now, &crate::engine::hostname());
    let ack = Acknowledgement {
        incident_id: id,
        by: who.name.clone(),
        note: note.to_string(),
        at: now,
        pages,
    };
    if !s.store.acknowledge(&ack).await? {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            format!("incident {id} was resolved or acknowledged meanwhile"),
        ));
    }
    tracing::info!(incident = id, by = %who.name, "incident acknowledged");
    Ok(())
}

pub(super) async fn silence(
    s: &AppState,
    who: &Identity,
    channel: Option<String>,
    owner: Option<String>,
    duration: &str,
    why: &str,
) -> Result<SilenceRecord, Refusal> {
    operator(who, "silencing")?;
    let config = s.config();
    let channel = channel.filter(|c| !c.is_empty());
    let owner = owner.filter(|o| !o.is_empty());
    match (&channel, &owner) {
        (Some(c), None) if config.channel(c).is_none() => {
            return Err(Refusal::new(StatusCode::BAD_REQUEST, format!("no channel {c:?}")))
        }
        (None, Some(o)) if !config.channels.iter().any(|c| &c.owner == o) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("no channel has owner {o:?}"),
            ))
        }
        (Some(_), None) | (None, Some(_)) => {}
        _ => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "a silence names exactly one of channel or owner",
            ))
        }
    }
    let d: HumanDuration = duration
        .trim()
        .parse()
        .map_err(|e: String| Refusal::new(StatusCode::BAD_REQUEST, format!("duration {duration:?}: {e}")))?;
    let ms = i64::try_from(d.as_duration().as_millis()).unwrap_or(i64::MAX);
    if ms <= 0 || ms > MAX_SILENCE_MS {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "a silence lasts more than nothing and at most 90 days",
        ));
    }
    let now = now_millis();
    let new = NewSilence {
        channel,
        owner,
        from: now,
        until: now + ms,
        reason: why.to_string(),
        by: who.name.clone(),
        at: now,
    };
    let id = s.store.add_silence(&new).await?;
    tracing::info!(silence = id, by = %who.name, "silence set");
    Ok(SilenceRecord {
        id,
        channel: new.channel,
        owner: new.owner,
        from: new.from,
        until: new.until,
        reason: new.reason,
        created_by: new.by,
        created_at: now,
        ended_at: None,
        ended_by: None,
    })
}

pub(super) async fn end_silence(s: &AppState, who: &Identity, id: i64, why: &str) -> Result<(), Refusal> {
    operator(who, "ending a silence")?;
    if !s.store.end_silence(id, &who.name, why, now_millis()).await? {
        return Err(Refusal::new(StatusCode::NOT_FOUND, format!("no silence {id} in force")));
    }
    Ok(())
}

async fn reload(s: &AppState, who: &Identity) -> Result<crate::engine::ReloadStatus, Refusal> {
    operator(who, "reloading")?;
    let Some(r) = &s.reloader else {
        return Err(Refusal::new(StatusCode::NOT_IMPLEMENTED, "this server cannot reload"));
    };
    Ok(r.reload(None, &who.name).await)
}

// --- the JSON API

#[derive(Deserialize)]
pub(super) struct AckBody {
    reason: Option<String>,
}

pub(super) async fn api_acknowledge(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<i64>,
    body: Option<Json<AckBody>>,
) -> Response {
    let note = match reason(body.as_ref().and_then(|b| b.reason.as_deref()), false) {
        Ok(r) => r,
        Err(r) => return json_refusal(r),
    };
    match acknowledge(&s, &who, id, &note).await {
        Ok(()) => match s.store.incident(id).await {
            Ok(i) => Json(i).into_response(),
            Err(e) => store_error(e),
        },
        Err(r) => json_refusal(r),
    }
}

#[derive(Deserialize)]
pub(super) struct SilenceBody {
    channel: Option<String>,
    owner: Option<String>,
    /// `2h`, `30m`, `1d`…
    duration: String,
    reason: Option<String>,
}

pub(super) async fn api_silence(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Json(b): Json<SilenceBody>,
) -> Response {
    let why = match reason(b.reason.as_deref(), true) {
        Ok(r) => r,
        Err(r) => return json_refusal(r),
    };
    match silence(&s, &who, b.channel, b.owner, &b.duration, &why).await {
        Ok(rec) => (StatusCode::CREATED, Json(rec)).into_response(),
        Err(r) => json_refusal(r),
    }
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    /// `all=1`: ended and expired silences too.
    all: Option<String>,
    before: Option<i64>,
    limit: Option<usize>,
}

pub(super) async fn api_silences(State(s): State<AppState>, Query(q): Query<ListQuery>) -> Response {
    let all = q.all.as_deref().is_some_and(|v| v == "1" || v == "true");
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    match s.store.silences((!all).then(now_millis), limit).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => store_error(e),
    }
}

pub(super) async fn api_end_silence(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<i64>,
    body: Option<Json<AckBody>>,
) -> Response {
    let why = match reason(body.as_ref().and_then(|b| b.reason.as_deref()), false) {
        Ok(r) => r,
        Err(r) => return json_refusal(r),
    };
    match end_silence(&s, &who, id, &why).await {
        Ok(()) => Json(serde_json::json!({ "ended": id })).into_response(),
        Err(r) => json_refusal(r),
    }
}

pub(super) async fn api_reload(State(s): State<AppState>, Extension(who): Extension<Identity>) -> Response {
    match reload(&s, &who).await {
        Ok(status) if status.ok => Json(status).into_response(),
        Ok(status) => (StatusCode::UNPROCESSABLE_ENTITY, Json(status)).into_response(),
        Err(r) => json_refusal(r),
    }
}

pub(super) async fn api_reload_status(State(s): State<AppState>) -> Response {
    match &s.reloader {
        Some(r) => Json(r.status()).into_response(),
        None => Json(crate::engine::ReloadStatus::default()).into_response(),
    }
}

pub(super) async fn api_audit(State(s): State<AppState>, Query(q): Query<ListQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    match s.store.audit_log(q.before, limit).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => store_error(e),
    }
}

// --- the page's forms

/// The form token of this browser, and whether it must be set as a cookie.
pub(super) fn csrf_token(headers: &HeaderMap) -> (String, bool) {
    match cookie(headers, CSRF_COOKIE).filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())) {
        Some(t) => (t, false),
        None => {
            let bytes: [u8; 16] = rand::random();
            (hex::encode(bytes), true)
        }
    }
}

/// The `Set-Cookie` value for a new form token.
pub(super) fn csrf_set_cookie(token: &str) -> String {
    format!("{CSRF_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The host part (`host[:port]`) of an absolute URL.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

/// A form post is ours: it comes from this server's pages (Origin, or
/// Referer when a browser sends no Origin) and repeats the cookie's token.
fn check_form(headers: &HeaderMap, form: &HashMap<String, String>) -> Result<(), Refusal> {
    let bad = |m: &str| Refusal::new(StatusCode::FORBIDDEN, m.to_string());
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| bad("the request names no host"))?;
    let from = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .and_then(url_host);
    if !from.is_some_and(|f| f.eq_ignore_ascii_case(host)) {
        return Err(bad("this form was not sent from this status page"));
    }
    let cookie = cookie(headers, CSRF_COOKIE).ok_or_else(|| bad("the form token is missing: reload the page"))?;
    let field = form.get("csrf").map(String::as_str).unwrap_or("");
    if cookie.is_empty() || !same(cookie.as_bytes(), field.as_bytes()) {
        return Err(bad("the form token does not match: reload the page"));
    }
    Ok(())
}

/// A form's answer: back to where it was, or the refusal as text.
fn after_form<T>(result: Result<T, Refusal>, f: &HashMap<String, String>) -> Response {
    match result {
        Ok(_) => back(f.get("back").map(String::as_str).unwrap_or("/")),
        Err(r) => text_refusal(r),
    }
}

/// Back to where the form was, on this server only.
fn back(to: &str) -> Response {
    let to = if to.starts_with('/') && !to.starts_with("//") {
        to
    } else {
        "/"
    };
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

pub(super) async fn form_acknowledge(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let run = async {
        check_form(&headers, &f)?;
        let note = reason(f.get("reason").map(String::as_str), false)?;
        acknowledge(&s, &who, id, &note).await
    };
    after_form(run.await, &f)
}

pub(super) async fn form_silence(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let run = async {
        check_form(&headers, &f)?;
        let why = reason(f.get("reason").map(String::as_str), true)?;
        // `target` is `channel:ID` or `owner:NAME` (one select on the page).
        let (channel, owner) = match f.get("target").and_then(|t| t.split_once(':')) {
            Some(("channel", c)) => (Some(c.to_string()), None),
            Some(("owner", o)) => (None, Some(o.to_string())),
            _ => (f.get("channel").cloned(), f.get("owner").cloned()),
        };
        let duration = f.get("duration").map(String::as_str).unwrap_or("");
        silence(&s, &who, channel, owner, duration, &why).await
    };
    after_form(run.await, &f)
}

pub(super) async fn form_end_silence(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let run = async {
        check_form(&headers, &f)?;
        let why = reason(f.get("reason").map(String::as_str), false)?;
        end_silence(&s, &who, id, &why).await
    };
    after_form(run.await, &f)
}

pub(super) async fn form_reload(
    State(s): State<AppState>,
    Extension(who): Extension<Identity>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let run = async {
        check_form(&headers, &f)?;
        reload(&s, &who).await
    };
    match run.await {
        // The page shows the outcome (a banner when refused).
        Ok(_) => back("/"),
        Err(r) => text_refusal(r),
    }
}

// --- CSV

#[derive(Deserialize)]
pub(super) struct CsvQuery {
    limit: Option<usize>,
}

/// A CSV field: quoted, and a leading formula character defused so a
/// spreadsheet never evaluates text that came from a server reply.
fn csv(field: &str) -> String {
    let f = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{field}")
    } else {
        field.to_string()
    };
    format!("\"{}\"", f.replace('"', "\"\""))
}

pub(super) async fn probes_csv(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<CsvQuery>,
) -> Response {
    let config = s.config();
    if config.channel(&id).is_none() {
        return (StatusCode::NOT_FOUND, "no such channel\n").into_response();
    }
    let tz = s.server.timezone;
    let t = |ms: Option<i64>| {
        ms.and_then(chrono::DateTime::from_timestamp_millis)
            .map(|d| {
                d.with_timezone(&tz)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
            })
            .unwrap_or_default()
    };
    let limit = q.limit.unwrap_or(100_000).clamp(1, 1_000_000);
    let mut out = String::from("created_at,sent_at,judged_at,verdict,latency_ms,found_in,detail,token\r\n");
    let mut cursor = None;
    let mut left = limit;
    // In pages of 5,000, newest first, so a long history never sits in memory twice.
    while left > 0 {
        let batch = match s.store.probes_before(&id, cursor.clone(), left.min(5000)).await {
            Ok(b) => b,
            Err(e) => return store_error(e),
        };
        let Some(last) = batch.last() else {
            break;
        };
        cursor = Some((last.created_at, last.id.clone()));
        left = left.saturating_sub(batch.len());
        for p in &batch {
            let _ = write!(
                out,
                "{},{},{},{},{},{},{},{}\r\n",
                csv(&t(Some(p.created_at))),
                csv(&t(p.sent_at)),
                csv(&t(p.judged_at)),
                csv(p.verdict.as_str()),
                p.latency_ms.map(|l| l.to_string()).unwrap_or_default(),
                csv(p.found_in.as_deref().unwrap_or("")),
                csv(p.detail.as_deref().unwrap_or("")),
                csv(&p.token)
            );
        }
    }
    let name = format!(
        "attachment; filename=\"{}-probes.csv\"",
        id.replace(['"', '\\', '/'], "_")
    );
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv("a\"b"), "\"a\"\"b\"");
        assert_eq!(csv("=HYPERLINK(1)"), "\"'=HYPERLINK(1)\"");
        assert_eq!(csv("delivered"), "\"delivered\"");
    }

    #[test]
    fn forms_need_our_origin_and_the_cookie_token() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        h.insert(header::COOKIE, "x=1; pc_csrf=abc".parse().unwrap());
        let mut f = HashMap::new();
        f.insert("csrf".to_string(), "abc".to_string());
        assert!(check_form(&h, &f).is_err(), "no origin");
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(check_form(&h, &f).is_err(), "foreign origin");
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(check_form(&h, &f).is_ok());
        f.insert("csrf".to_string(), "abd".to_string());
        assert!(check_form(&h, &f).is_err(), "token differs");
        h.remove(header::ORIGIN);
        h.insert(header::REFERER, "http://127.0.0.1:8080/incidents/3".parse().unwrap());
        f.insert("csrf".to_string(), "abc".to_string());
        assert!(check_form(&h, &f).is_ok(), "referer when no origin");
    }

    #[test]
    fn redirects_stay_on_this_server() {
        let loc = |r: Response| r.headers()[header::LOCATION].to_str().unwrap().to_string();
        assert_eq!(loc(back("/incidents/3")), "/incidents/3");
        assert_eq!(loc(back("//evil.example/")), "/");
        assert_eq!(loc(back("https://evil.example/")), "/");
    }
}
