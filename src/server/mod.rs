//! The HTTP server of `postcanary run`: the staff status page, the JSON API,
//! Prometheus `/metrics` and `/healthz`. Everything here only reads the
//! ledger and the watchers' states; nothing here judges a probe.

mod api;
mod compliance;
mod escape;
mod metrics;
mod ops;
mod page;
mod retain;
mod summary;
mod vantages;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use tokio::sync::watch;

use crate::config::{Config, Role, ServerConfig};
use crate::inbox::imap::WatcherState;
use crate::ledger::DynStore;
use crate::verdict::now_millis;

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    /// The config in force (follows reloads).
    pub live: watch::Receiver<Arc<Config>>,
    /// Reloads the config (`POST /api/reload`); `None` where nothing can be reloaded.
    pub reloader: Option<crate::engine::Reloader>,
    pub server: Arc<ServerConfig>,
    pub store: DynStore,
    pub watchers: Arc<Vec<(String, watch::Receiver<WatcherState>)>>,
    /// What each watcher has looked at, and since when it is blind.
    pub points: crate::inbox::watchpoint::WatchPoints,
    pub scheduler_tick: Arc<AtomicI64>,
    /// With `[ledger] ha`: "active …", shown by `/healthz`.
    pub role: Option<String>,
    /// With `[vantage]` and `ha`: the `/healthz` line naming who pages.
    pub leases: Option<watch::Receiver<String>>,
    /// What `/metrics` has counted so far.
    pub(crate) metrics: Arc<metrics::Tally>,
}

impl AppState {
    /// The config in force now.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.live.borrow())
    }

    fn watcher_states(&self) -> Vec<(String, WatcherState)> {
        self.watchers
            .iter()
            .map(|(n, rx)| (n.clone(), rx.borrow().clone()))
            .collect()
    }

    /// Blind watchers: (name, since, why), by name.
    fn blind_watchers(&self) -> Vec<(String, crate::verdict::Millis, String)> {
        let mut v: Vec<_> = self
            .points
            .0
            .iter()
            .filter_map(|p| p.blind_since().map(|(since, why)| (p.name.clone(), since, why)))
            .collect();
        v.sort();
        v
    }
}

/// The router with every route and the access check.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/owners/{name}", get(page::owner))
        .route("/channels/{id}", get(page::channel))
        .route("/channels/{id}/probes.csv", get(ops::probes_csv))
        .route("/incidents/{id}", get(page::incident))
        .route("/incidents/{id}/acknowledge", post(ops::form_acknowledge))
        .route("/silences", post(ops::form_silence))
        .route("/silences/{id}/end", post(ops::form_end_silence))
        .route("/reload", post(ops::form_reload))
        .route("/audit", get(page::audit))
        .route("/api/incidents/{id}/acknowledge", post(ops::api_acknowledge))
        .route("/api/silences", get(ops::api_silences).post(ops::api_silence))
        .route("/api/silences/{id}/end", post(ops::api_end_silence))
        .route("/api/reload", get(ops::api_reload_status).post(ops::api_reload))
        .route("/api/audit", get(ops::api_audit))
        .route("/api/channels", get(api::channels))
        .route("/api/channels/{id}", get(api::channel))
        .route("/api/channels/{id}/probes", get(api::probes))
        .route("/api/incidents", get(api::incidents))
        .route("/api/openapi.json", get(api::openapi))
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(healthz))
        .layer(axum::middleware::from_fn_with_state(state.clone(), access))
        .with_state(state)
}

/// Serves until `shutdown` turns true.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState, mut shutdown: watch::Receiver<bool>) {
    let app = router(state);
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

async fn healthz(State(s): State<AppState>) -> Response {
    let (status, mut text) = health(&s);
    if let Some(v) = &s.config().vantage {
        text.push_str(&format!("vantage: {}\n", v.name));
    }
    match &s.role {
        Some(role) => {
            text.push_str(&format!("role: {role}\n"));
            if let Some(l) = &s.leases {
                text.push_str(&l.borrow());
            }
            with_role(status, text, "active")
        }
        None => (status, text).into_response(),
    }
}

fn health(s: &AppState) -> (StatusCode, String) {
    match crate::heartbeat::unhealthy(
        s.scheduler_tick.load(Ordering::Relaxed),
        now_millis(),
        &s.watcher_states(),
    ) {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(why) => {
            let mut text = format!("unhealthy: {why}\n");
            for (name, since, reason) in s.blind_watchers() {
                text.push_str(&format!(
                    "watcher {name}: blind since {} ({}s): {reason}\n",
                    crate::notify::rfc3339(since),
                    (now_millis() - since).max(0) / 1000
                ));
            }
            (StatusCode::SERVICE_UNAVAILABLE, text)
        }
    }
}

/// Equal-time comparison, so a token cannot be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who is asking, as the access check established it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// A `[[server.user]]` name, the basic user, `bearer token` for the
    /// plain `bearer_tokens`, or `anonymous` where no credentials are configured.
    pub name: String,
    pub role: Role,
}

/// The identity behind the request's credentials, if they are valid.
fn identify(server: &ServerConfig, headers: &HeaderMap) -> Option<Identity> {
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        let token = token.trim().as_bytes();
        // Every credential is compared, so the time taken says nothing of which matched.
        let mut found = None;
        for u in &server.users {
            if let Some(t) = &u.token {
                if same(t.expose().as_bytes(), token) && found.is_none() {
                    found = Some(Identity {
                        name: u.name.clone(),
                        role: u.role,
                    });
                }
            }
        }
        for t in &server.bearer_tokens {
            if same(t.expose().as_bytes(), token) && found.is_none() {
                found = Some(Identity {
                    name: "bearer token".into(),
                    role: Role::Viewer,
                });
            }
        }
        return found;
    }
    let b64 = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let mut found = None;
    for u in &server.users {
        if let Some(p) = &u.password {
            let expected = format!("{}:{}", u.name, p.expose());
            if same(&decoded, expected.as_bytes()) && found.is_none() {
                found = Some(Identity {
                    name: u.name.clone(),
                    role: u.role,
                });
            }
        }
    }
    if let Some((user, password)) = &server.basic {
        let expected = format!("{user}:{}", password.expose());
        if same(&decoded, expected.as_bytes()) && found.is_none() {
            found = Some(Identity {
                name: user.clone(),
                role: Role::Viewer,
            });
        }
    }
    found
}

async fn access(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let public = (path == "/healthz" && s.server.public_healthz) || (path == "/metrics" && s.server.public_metrics);
    if !s.server.has_auth() {
        req.extensions_mut().insert(Identity {
            name: "anonymous".into(),
            role: Role::Viewer,
        });
        return next.run(req).await;
    }
    if let Some(id) = identify(&s.server, req.headers()) {
        req.extensions_mut().insert(id);
        return next.run(req).await;
    }
    if public {
        return next.run(req).await;
    }
    let mut resp = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
    let basic = s.server.basic.is_some() || s.server.users.iter().any(|u| u.password.is_some());
    if basic {
        if let Ok(v) = header::HeaderValue::from_str("Basic realm=\"postcanary\", charset=\"UTF-8\"") {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
    resp
}

/// A ledger failure as a response; the message names the ledger, never a secret.
fn store_error(e: crate::ledger::StoreError) -> Response {
    tracing::error!(error = %e, "HTTP handler cannot read the ledger");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "the ledger cannot be read right now\n",
    )
        .into_response()
}

/// Binds and starts the HTTP server if `[server]` is configured, as one of
/// the engine's tasks; returns the bound address. A bind failure is an
/// error: the operator asked for it.
pub async fn start(engine: &mut crate::engine::Engine) -> Result<Option<std::net::SocketAddr>, String> {
    let Some(server) = engine.config.server.clone() else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", server.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let state = AppState {
        live: engine.live(),
        reloader: Some(engine.reloader()),
        server: Arc::new(server),
        store: Arc::clone(&engine.store),
        watchers: Arc::new(engine.watcher_receivers().into_iter().collect()),
        points: engine.watch_points.clone(),
        scheduler_tick: engine.scheduler_tick(),
        role: engine.role.clone(),
        leases: engine.leases.clone(),
        metrics: Arc::default(),
    };
    engine.spawn_service(|shutdown| serve(listener, state, shutdown));
    tracing::info!(%addr, "status page and API listening");
    Ok(Some(addr))
}

/// The `/healthz` response with the role in a header (`x-postcanary-role`).
pub fn with_role(status: StatusCode, text: String, role: &str) -> Response {
    let mut resp = (status, text).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(role) {
        resp.headers_mut().insert("x-postcanary-role", v);
    }
    resp
}
