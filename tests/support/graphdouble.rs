//! An in-process double of the Microsoft identity platform's token endpoint
//! and the few Microsoft Graph mail routes postcanary uses, on 127.0.0.1.
//! Responses are built from the response shapes Microsoft publishes for
//! these endpoints, kept in tests/fixtures/graph/ (see SOURCES.md there for
//! which page each one follows): `@odata.context`, `value`,
//! `@odata.nextLink`, `@odata.etag`, the OAuth and Graph error objects.
//!
//! It also behaves as Graph is documented to, where postcanary depends on it:
//! `mailFolders` lists only top-level folders (children are under
//! `childFolders`); `body` is HTML unless `Prefer:
//! outlook.body-content-type="text"` asks for text; `move` makes a copy with
//! a new id in the destination and removes the original; `$orderby` on a
//! property that does not lead `$filter` is refused with `InefficientFilter`;
//! an unknown mailbox is `ErrorInvalidUser`; a mailbox the app may not read
//! (permissions, application access policy) is `403 ErrorAccessDenied`.
//!
//! Tests deliver raw MIME into its folders, add folders, make tokens expire,
//! inject 429s, deny access, and read back what was moved, deleted and which
//! headers arrived.
//!
//! Routes:
//! - `POST /{tenant}/oauth2/v2.0/token` (client_credentials)
//! - `GET  /v1.0/users/{upn}/mailFolders?$filter=displayName eq 'X'`
//! - `GET  /v1.0/users/{upn}/mailFolders/{folder}/childFolders?$filter=displayName eq 'X'`
//! - `GET  /v1.0/users/{upn}/mailFolders/{folder}/messages?$filter=receivedDateTime ge T&$select&$orderby&$top[&$skip]`
//! - `GET  /v1.0/users/{upn}/messages/{id}?$select=...`
//! - `GET  /v1.0/users/{upn}/messages/{id}/$value`
//! - `POST /v1.0/users/{upn}/messages/{id}/move`
//! - `DELETE /v1.0/users/{upn}/messages/{id}`
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

const TOKEN_RESPONSE: &str = include_str!("../fixtures/graph/token_response.json");
const TOKEN_ERROR: &str = include_str!("../fixtures/graph/token_error.json");
const MESSAGES_PAGE: &str = include_str!("../fixtures/graph/messages_page.json");
const MAIL_FOLDERS: &str = include_str!("../fixtures/graph/mail_folders.json");
const MOVE_RESPONSE: &str = include_str!("../fixtures/graph/move_response.json");
const ERROR_401: &str = include_str!("../fixtures/graph/error_401.json");
const ERROR_404: &str = include_str!("../fixtures/graph/error_404.json");
const ERROR_429: &str = include_str!("../fixtures/graph/error_429.json");
const ERROR_403: &str = include_str!("../fixtures/graph/error_403.json");
const ERROR_INVALID_USER: &str = include_str!("../fixtures/graph/error_invalid_user.json");
const ERROR_INEFFICIENT_FILTER: &str = include_str!("../fixtures/graph/error_inefficient_filter.json");

pub const TENANT: &str = "00000000-0000-0000-0000-00000000abcd";
pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
/// The one mailbox the double has, unless [`GraphDouble::set_mailbox`] says otherwise.
pub const MAILBOX: &str = "canary@kommune.dk";
pub const INBOX_ID: &str = "AAMkAGI2-inbox-folder-id=";
pub const JUNK_ID: &str = "AAMkAGI2-junkemail-folder-id=";

#[derive(Clone, Debug)]
pub struct Message {
    pub id: String,
    pub folder: String,
    pub received: DateTime<Utc>,
    pub raw: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct Request {
    pub at: Instant,
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    pub status: u16,
    /// The `Prefer` header, if any.
    pub prefer: Option<String>,
}

struct Folder {
    id: String,
    display_name: String,
    well_known: Option<String>,
    /// `None` for a top-level folder (a child of msgfolderroot).
    parent: Option<String>,
}

struct State {
    base: String,
    mailbox: String,
    secret: String,
    /// Echo the presented client_secret in token errors (worse than Azure AD, on purpose).
    echo_secret: bool,
    expires_in: u64,
    issued: u32,
    /// Valid tokens and how many Graph requests each has served.
    tokens: HashMap<String, u32>,
    expire_after: Option<u32>,
    throttle: VecDeque<u64>,
    deny: bool,
    page_size: usize,
    next_id: u32,
    messages: Vec<Message>,
    folders: Vec<Folder>,
    /// (old id, destinationId as sent, new id).
    moves: Vec<(String, String, String)>,
    deletes: Vec<String>,
    auth_headers: Vec<String>,
    token_requests: Vec<String>,
    requests: Vec<Request>,
}

pub struct GraphDouble {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture JSON")
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

impl GraphDouble {
    /// Starts the double; the client secret it accepts is `secret`.
    pub async fn start(secret: &str) -> GraphDouble {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind graph double");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            base: format!("http://{addr}/v1.0"),
            mailbox: MAILBOX.into(),
            secret: secret.to_string(),
            echo_secret: false,
            expires_in: 3599,
            issued: 0,
            tokens: HashMap::new(),
            expire_after: None,
            throttle: VecDeque::new(),
            deny: false,
            page_size: 1000,
            next_id: 0,
            messages: Vec::new(),
            folders: vec![
                Folder {
                    id: INBOX_ID.into(),
                    display_name: "Inbox".into(),
                    well_known: Some("inbox".into()),
                    parent: None,
                },
                Folder {
                    id: JUNK_ID.into(),
                    // A Danish mailbox shows its localized name; the well-known name stays.
                    display_name: "Uønsket mail".into(),
                    well_known: Some("junkemail".into()),
                    parent: None,
                },
                Folder {
                    id: "AAMkAGI2-deleteditems-folder-id=".into(),
                    display_name: "Slettet post".into(),
                    well_known: Some("deleteditems".into()),
                    parent: None,
                },
            ],
            moves: Vec::new(),
            deletes: Vec::new(),
            auth_headers: Vec::new(),
            token_requests: Vec::new(),
            requests: Vec::new(),
        }));
        let st = Arc::clone(&state);
        let app = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let st = Arc::clone(&st);
            async move { handle(&st, method, uri, headers, body) }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GraphDouble { addr, state }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1.0", self.addr)
    }

    pub fn token_url(&self) -> String {
        format!("http://{}/{TENANT}/oauth2/v2.0/token", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("double state")
    }

    /// Puts a message into the Inbox, received now (whole seconds, like Graph).
    pub fn deliver(&self, raw: &[u8]) -> String {
        self.deliver_to(INBOX_ID, raw)
    }

    pub fn deliver_at(&self, raw: &[u8], received: DateTime<Utc>) -> String {
        self.deliver_into(INBOX_ID, raw, received)
    }

    /// Puts a message into the folder with id `folder`, received now.
    pub fn deliver_to(&self, folder: &str, raw: &[u8]) -> String {
        let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now");
        self.deliver_into(folder, raw, now)
    }

    fn deliver_into(&self, folder: &str, raw: &[u8], received: DateTime<Utc>) -> String {
        let mut s = self.lock();
        let id = new_id(&mut s);
        let folder = folder.to_string();
        s.messages.push(Message {
            id: id.clone(),
            folder,
            received,
            raw: raw.to_vec(),
        });
        id
    }

    /// Adds a top-level folder; returns its id.
    pub fn add_folder(&self, display_name: &str) -> String {
        self.add_folder_under(None, display_name)
    }

    /// Adds a folder under the folder with id `parent`; returns its id.
    pub fn add_child_folder(&self, parent: &str, display_name: &str) -> String {
        self.add_folder_under(Some(parent), display_name)
    }

    fn add_folder_under(&self, parent: Option<&str>, display_name: &str) -> String {
        let mut s = self.lock();
        let id = format!("AAMkAGI2-folder-{}=", s.folders.len());
        s.folders.push(Folder {
            id: id.clone(),
            display_name: display_name.into(),
            well_known: None,
            parent: parent.map(str::to_string),
        });
        id
    }

    /// Display name of the folder a message is in now.
    pub fn folder_of(&self, id: &str) -> Option<String> {
        let s = self.lock();
        let m = s.messages.iter().find(|m| m.id == id)?;
        s.folders
            .iter()
            .find(|f| f.id == m.folder)
            .map(|f| f.display_name.clone())
    }

    /// Ids of the messages in the folder with id `folder`, oldest first.
    pub fn ids_in(&self, folder: &str) -> Vec<String> {
        let s = self.lock();
        let mut m: Vec<&Message> = s.messages.iter().filter(|m| m.folder == folder).collect();
        m.sort_by_key(|m| m.received);
        m.into_iter().map(|m| m.id.clone()).collect()
    }

    /// Removes a message for good, as a person emptying Deleted Items (or
    /// a vendor's clean-up job) would; it is not recorded among `deletes`.
    pub fn purge(&self, id: &str) -> bool {
        let mut s = self.lock();
        let before = s.messages.len();
        s.messages.retain(|m| m.id != id);
        s.messages.len() != before
    }

    /// Replaces a message's content in place (same id, folder and
    /// `receivedDateTime`), as an edit in the store would.
    pub fn rewrite(&self, id: &str, raw: &[u8]) -> bool {
        let mut s = self.lock();
        match s.messages.iter_mut().find(|m| m.id == id) {
            Some(m) => {
                m.raw = raw.to_vec();
                true
            }
            None => false,
        }
    }

    /// The raw MIME of a message.
    pub fn raw_of(&self, id: &str) -> Option<Vec<u8>> {
        self.lock().messages.iter().find(|m| m.id == id).map(|m| m.raw.clone())
    }

    /// The user principal name of the double's mailbox.
    pub fn set_mailbox(&self, upn: &str) {
        self.lock().mailbox = upn.into();
    }
    pub fn set_page_size(&self, n: usize) {
        self.lock().page_size = n;
    }
    pub fn set_expires_in(&self, secs: u64) {
        self.lock().expires_in = secs;
    }
    pub fn echo_secret_in_errors(&self) {
        self.lock().echo_secret = true;
    }
    /// Every token turns invalid (401) after serving `n` Graph requests.
    pub fn expire_tokens_after(&self, n: u32) {
        self.lock().expire_after = Some(n);
    }
    /// The next Graph request is answered 429 with `Retry-After: secs`.
    pub fn throttle_next(&self, retry_after_secs: u64) {
        self.lock().throttle.push_back(retry_after_secs);
    }
    /// Every mail request is refused as Exchange does when the app lacks
    /// the permission or an application access policy leaves the mailbox out.
    pub fn deny_access(&self, deny: bool) {
        self.lock().deny = deny;
    }

    /// (old id, destinationId as sent, new id) of every move.
    pub fn moves(&self) -> Vec<(String, String, String)> {
        self.lock().moves.clone()
    }
    pub fn deletes(&self) -> Vec<String> {
        self.lock().deletes.clone()
    }
    pub fn auth_headers(&self) -> Vec<String> {
        self.lock().auth_headers.clone()
    }
    /// Form bodies of the token requests.
    pub fn token_requests(&self) -> Vec<String> {
        self.lock().token_requests.clone()
    }
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn decode(segment: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", segment.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn handle(st: &Mutex<State>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut s = st.lock().expect("double state");
    let target = uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let resp = route(&mut s, &method, &uri, &headers, &body);
    s.requests.push(Request {
        at: Instant::now(),
        method: method.to_string(),
        target,
        status: resp.status().as_u16(),
        prefer: prefer(&headers),
    });
    resp
}

fn prefer(headers: &HeaderMap) -> Option<String> {
    headers.get("prefer").and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Whether the request asked for text bodies.
fn wants_text(headers: &HeaderMap) -> bool {
    prefer(headers).is_some_and(|p| p.replace(' ', "").contains("outlook.body-content-type=\"text\""))
}

fn new_id(s: &mut State) -> String {
    s.next_id += 1;
    // Graph ids are long base64url strings, often ending in '='.
    format!("AAMkAGI2THVSAAA-msg{:04}=", s.next_id)
}

/// An error fixture with its `innerError.date` set to now, as Graph does.
fn error_response(status: StatusCode, text: &str) -> Response {
    let mut v = fixture(text);
    v["error"]["innerError"]["date"] = json!(Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string());
    json_response(status, v)
}

fn route(s: &mut State, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Response {
    let path = uri.path();
    if method == Method::POST && path == format!("/{TENANT}/oauth2/v2.0/token") {
        return token(s, body);
    }
    let Some(rest) = path.strip_prefix("/v1.0/users/") else {
        return json_response(StatusCode::NOT_FOUND, fixture(ERROR_404));
    };
    // Authorization first, as Graph does.
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    s.auth_headers.push(auth.clone());
    let token = auth.strip_prefix("Bearer ").unwrap_or("");
    let expire_after = s.expire_after;
    match s.tokens.get_mut(token) {
        Some(uses) if expire_after.is_none_or(|n| *uses < n) => *uses += 1,
        _ => return error_response(StatusCode::UNAUTHORIZED, ERROR_401),
    }
    if let Some(wait) = s.throttle.pop_front() {
        let mut r = error_response(StatusCode::TOO_MANY_REQUESTS, ERROR_429);
        r.headers_mut()
            .insert("retry-after", wait.to_string().parse().expect("header"));
        return r;
    }
    let segs: Vec<String> = rest.split('/').map(decode).collect();
    let seg: Vec<&str> = segs.iter().map(String::as_str).collect();
    if !seg.first().is_some_and(|u| u.eq_ignore_ascii_case(&s.mailbox)) {
        let mut v = fixture(ERROR_INVALID_USER);
        v["error"]["message"] = json!(format!(
            "The requested user '{}' is invalid.",
            seg.first().copied().unwrap_or("")
        ));
        return json_response(StatusCode::NOT_FOUND, v);
    }
    if s.deny {
        return error_response(StatusCode::FORBIDDEN, ERROR_403);
    }
    let q = query_map(uri);
    let text = wants_text(headers);
    match (method.clone(), seg.as_slice()) {
        (Method::GET, [upn, "mailFolders"]) => folders(s, upn, None, &q),
        (Method::GET, [upn, "mailFolders", parent, "childFolders"]) => match find_folder(s, parent) {
            Some(pid) => folders(s, upn, Some(&pid), &q),
            None => error_response(StatusCode::NOT_FOUND, ERROR_404),
        },
        (Method::GET, [upn, "mailFolders", folder, "messages"]) => list(s, upn, folder, &q, text),
        (Method::GET, [upn, "messages", id]) => match s.messages.iter().find(|m| m.id == *id) {
            Some(m) => {
                let template = fixture(MESSAGES_PAGE)["value"][0].clone();
                let select: Option<Vec<&str>> = q.get("$select").map(|v| v.split(',').collect());
                let mut v = message_json(&template, m, select.as_deref(), text);
                v["@odata.context"] = json!(format!("{}/$metadata#users('{upn}')/messages/$entity", s.base));
                json_response(StatusCode::OK, v)
            }
            None => error_response(StatusCode::NOT_FOUND, ERROR_404),
        },
        (Method::GET, [_, "messages", id, "$value"]) => match s.messages.iter().find(|m| m.id == *id) {
            Some(m) => ([("content-type", "text/plain")], m.raw.clone()).into_response(),
            None => error_response(StatusCode::NOT_FOUND, ERROR_404),
        },
        (Method::POST, [_, "messages", id, "move"]) => {
            let dest = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["destinationId"].as_str().map(str::to_string))
                .unwrap_or_default();
            let Some(folder_id) = find_folder(s, &dest) else {
                return error_response(StatusCode::NOT_FOUND, ERROR_404);
            };
            let Some(pos) = s.messages.iter().position(|m| m.id == *id) else {
                return error_response(StatusCode::NOT_FOUND, ERROR_404);
            };
            // A move is a copy under a new id in the destination; the original is gone.
            let new = new_id(s);
            let mut m = s.messages.remove(pos);
            m.id = new.clone();
            m.folder = folder_id.clone();
            let template = fixture(MOVE_RESPONSE);
            let mut v = message_json(&template, &m, None, false);
            v["@odata.context"] = json!(format!("{}/$metadata#message", s.base));
            v["parentFolderId"] = json!(folder_id);
            s.messages.push(m);
            s.moves.push((id.to_string(), dest, new));
            (StatusCode::CREATED, axum::Json(v)).into_response()
        }
        (Method::DELETE, [_, "messages", id]) => {
            let before = s.messages.len();
            s.messages.retain(|m| m.id != *id);
            if s.messages.len() == before {
                return error_response(StatusCode::NOT_FOUND, ERROR_404);
            }
            s.deletes.push(id.to_string());
            StatusCode::NO_CONTENT.into_response()
        }
        _ => error_response(StatusCode::NOT_FOUND, ERROR_404),
    }
}

fn token(s: &mut State, body: &Bytes) -> Response {
    let text = String::from_utf8_lossy(body).into_owned();
    s.token_requests.push(text.clone());
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let ok = form.get("grant_type").map(String::as_str) == Some("client_credentials")
        && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && form.get("client_secret") == Some(&s.secret)
        && form.get("scope").map(String::as_str) == Some("https://graph.microsoft.com/.default");
    if !ok {
        let mut v = fixture(TOKEN_ERROR);
        if s.echo_secret {
            let got = form.get("client_secret").cloned().unwrap_or_default();
            v["error_description"] = json!(format!("AADSTS7000215: Invalid client secret provided: '{got}'"));
        }
        return json_response(StatusCode::UNAUTHORIZED, v);
    }
    s.issued += 1;
    let access = format!("eyJ0eXAiOiJKV1Qi.double-token-{}", s.issued);
    s.tokens.insert(access.clone(), 0);
    let mut v = fixture(TOKEN_RESPONSE);
    v["access_token"] = json!(access);
    v["expires_in"] = json!(s.expires_in);
    v["ext_expires_in"] = json!(s.expires_in);
    json_response(StatusCode::OK, v)
}

fn find_folder(s: &State, key: &str) -> Option<String> {
    s.folders
        .iter()
        .find(|f| f.id == key || f.well_known.as_deref().is_some_and(|w| w.eq_ignore_ascii_case(key)))
        .map(|f| f.id.clone())
}

/// The folders directly under `parent` (`None`: the top level).
fn folders(s: &State, upn: &str, parent: Option<&str>, q: &HashMap<String, String>) -> Response {
    let filter = q.get("$filter").cloned().unwrap_or_default();
    let wanted = filter
        .strip_prefix("displayName eq '")
        .and_then(|r| r.strip_suffix('\''))
        .map(|n| n.replace("''", "'"));
    let template = fixture(MAIL_FOLDERS);
    let value: Vec<Value> = s
        .folders
        .iter()
        .filter(|f| f.parent.as_deref() == parent)
        .filter(|f| {
            wanted
                .as_deref()
                .is_none_or(|w| w.eq_ignore_ascii_case(&f.display_name))
        })
        .map(|f| {
            let mut v = template["value"][0].clone();
            v["id"] = json!(f.id);
            v["displayName"] = json!(f.display_name);
            v["parentFolderId"] = json!(f.parent.as_deref().unwrap_or("AAMkAGI2-msgfolderroot-id="));
            v
        })
        .collect();
    json_response(
        StatusCode::OK,
        json!({
            "@odata.context": match parent {
                None => format!("{}/$metadata#users('{upn}')/mailFolders(id,displayName)", s.base),
                Some(p) => format!("{}/$metadata#users('{upn}')/mailFolders('{p}')/childFolders(id,displayName)", s.base),
            },
            "value": value,
        }),
    )
}

fn list(s: &State, upn: &str, folder: &str, q: &HashMap<String, String>, text: bool) -> Response {
    let Some(folder_id) = find_folder(s, folder) else {
        return error_response(StatusCode::NOT_FOUND, ERROR_404);
    };
    let filter = q.get("$filter").map(String::as_str).unwrap_or("");
    // Graph's rule: a property in $orderby must lead $filter.
    if let Some(order) = q.get("$orderby") {
        let prop = order.split_whitespace().next().unwrap_or("");
        if !filter.trim_start().starts_with(prop) {
            return error_response(StatusCode::BAD_REQUEST, ERROR_INEFFICIENT_FILTER);
        }
    }
    // `receivedDateTime ge T [and contains(subject,'x')]`, the shapes postcanary sends.
    let mut since = None;
    let mut subject_has: Option<String> = None;
    for clause in filter.split(" and ").map(str::trim).filter(|c| !c.is_empty()) {
        if let Some(t) = clause.strip_prefix("receivedDateTime ge ") {
            match DateTime::parse_from_rfc3339(t.trim()) {
                Ok(t) => since = Some(t.with_timezone(&Utc)),
                Err(_) => return bad_filter(clause),
            }
        } else if let Some(x) = clause
            .strip_prefix("contains(subject,'")
            .and_then(|r| r.strip_suffix("')"))
        {
            subject_has = Some(x.replace("''", "'").to_lowercase());
        } else if !clause.starts_with("subject eq ") {
            return bad_filter(clause);
        }
    }
    let top: usize = q.get("$top").and_then(|t| t.parse().ok()).unwrap_or(10);
    let skip: usize = q.get("$skip").and_then(|t| t.parse().ok()).unwrap_or(0);
    let page = top.min(s.page_size);
    let mut matching: Vec<&Message> = s
        .messages
        .iter()
        .filter(|m| m.folder == folder_id && since.is_none_or(|t| m.received >= t))
        // contains() is case-insensitive in Exchange.
        .filter(|m| {
            subject_has
                .as_deref()
                .is_none_or(|x| subject_of(m).to_lowercase().contains(x))
        })
        .collect();
    matching.sort_by_key(|m| m.received);
    let select: Option<Vec<&str>> = q.get("$select").map(|v| v.split(',').collect());
    let template = fixture(MESSAGES_PAGE)["value"][0].clone();
    let value: Vec<Value> = matching
        .iter()
        .skip(skip)
        .take(page)
        .map(|m| message_json(&template, m, select.as_deref(), text))
        .collect();
    let mut out = json!({
        "@odata.context": format!("{}/$metadata#users('{upn}')/mailFolders('{folder}')/messages", s.base),
        "value": value,
    });
    if skip + page < matching.len() {
        // Graph's nextLink repeats the whole query with a $skip; keep it opaque.
        let mut pairs: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| *k != "$skip")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        pairs.push(("$skip".into(), (skip + page).to_string()));
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        out["@odata.nextLink"] = json!(format!("{}/users/{upn}/mailFolders/{folder}/messages?{query}", s.base));
    }
    json_response(StatusCode::OK, out)
}

fn subject_of(m: &Message) -> String {
    mail_parser::MessageParser::default()
        .parse(&m.raw)
        .and_then(|p| p.subject().map(str::to_string))
        .unwrap_or_default()
}

/// A `$filter` the double does not understand: refused, so a changed query shows up.
fn bad_filter(clause: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({"error": {"code": "BadRequest", "message": format!("Invalid filter clause: {clause}")}}),
    )
}

/// A message as Graph lists it; `body` is HTML unless `text` was asked for.
fn message_json(template: &Value, m: &Message, select: Option<&[&str]>, text: bool) -> Value {
    let parsed = mail_parser::MessageParser::default().parse(&m.raw);
    let subject = parsed.as_ref().and_then(|p| p.subject()).unwrap_or("").to_string();
    let mid = parsed
        .as_ref()
        .and_then(|p| p.message_id())
        .map(|i| format!("<{i}>"))
        .unwrap_or_else(|| format!("<{}@double>", m.id));
    let plain = parsed
        .as_ref()
        .and_then(|p| p.body_text(0).map(|t| t.into_owned()))
        .unwrap_or_default();
    let mut v = template.clone();
    v["id"] = json!(m.id);
    v["receivedDateTime"] = json!(m.received.to_rfc3339_opts(SecondsFormat::Secs, true));
    v["subject"] = json!(subject);
    v["internetMessageId"] = json!(mid);
    v["body"] = if text {
        json!({"contentType": "text", "content": plain})
    } else {
        let escaped = plain.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        json!({
            "contentType": "html",
            "content": format!("<html><head>\r\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">\r\n</head>\r\n<body>\r\n<div>{escaped}</div>\r\n</body>\r\n</html>\r\n")
        })
    };
    if let (Some(sel), Some(obj)) = (select, v.as_object_mut()) {
        obj.retain(|k, _| k == "@odata.etag" || sel.contains(&k.as_str()));
    }
    v
}
