//! OAuth2 for Microsoft 365 mailboxes: the client-credentials grant against
//! the Microsoft identity platform (`POST {tenant}/oauth2/v2.0/token`), a
//! token cache shared by everything that talks to one tenant, and the SASL
//! XOAUTH2 authenticator Exchange Online IMAP wants now that basic auth is
//! gone there.
//!
//! Neither the client secret nor an access token may ever reach a log line
//! or an error message: [`OAuthError`] is built only from the status, the
//! identity platform's error code and a scrubbed description, and
//! [`TokenCache`] and [`XOAuth2`] print `***` in their `Debug`.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Refresh this long before the token expires, so a request never leaves
/// with a token that dies in flight.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Limit for one token request.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
/// The identity platform's answers are small; anything bigger is not one.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// How much of a server-provided error description is kept.
const MAX_DESCRIPTION: usize = 300;

pub use crate::config::ClientCredentials;

/// A failed token request. Carries no secret and no token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// The token endpoint could not be reached or did not answer in time.
    #[error("token endpoint unreachable: {0}")]
    Transport(String),
    /// The identity platform refused (wrong secret, unknown client, …).
    #[error("token endpoint refused the client credentials (HTTP {status}): {error}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Refused {
        status: u16,
        error: String,
        description: Option<String>,
    },
    /// The answer was not a usable bearer token.
    #[error("token endpoint gave an unusable answer: {0}")]
    BadResponse(String),
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct TokenErrorResponse {
    error: Option<String>,
    error_description: Option<String>,
}

struct Cached {
    token: String,
    refresh_at: Instant,
}

/// Access tokens for one set of client credentials. Hands out the cached
/// token until shortly before it expires; a mutex held across the refresh
/// means concurrent callers wait for one request instead of each making one.
pub struct TokenCache {
    creds: ClientCredentials,
    http: reqwest::Client,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("token_url", &self.creds.token_url)
            .field("client_id", &self.creds.client_id)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    pub fn new(creds: ClientCredentials, http: reqwest::Client) -> TokenCache {
        TokenCache {
            creds,
            http,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    pub fn credentials(&self) -> &ClientCredentials {
        &self.creds
    }

    /// A bearer token valid for a while yet, fetched if needed.
    pub async fn bearer(&self) -> Result<String, OAuthError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if Instant::now() < c.refresh_at {
                return Ok(c.token.clone());
            }
        }
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Forgets `rejected` after a resource server answered 401 to it, so the
    /// next [`bearer`](Self::bearer) fetches a new one. A token that has
    /// already been replaced (another caller got the 401 first) is left alone,
    /// so one expiry costs one refresh.
    pub async fn invalidate(&self, rejected: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| c.token == rejected) {
            *cached = None;
        }
    }

    async fn fetch(&self) -> Result<Cached, OAuthError> {
        let secret = self.creds.client_secret.expose();
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.creds.client_id.as_str()),
            ("client_secret", secret),
            ("scope", self.creds.scope.as_str()),
        ];
        let started = Instant::now();
        let mut resp = self
            .http
            .post(&self.creds.token_url)
            .form(&form)
            .timeout(TOKEN_TIMEOUT)
            .send()
            .await
            .map_err(|e| OAuthError::Transport(scrub(&e.to_string(), &[secret])))?;
        let status = resp.status();
        let body = read_capped(&mut resp, MAX_TOKEN_RESPONSE)
            .await
            .map_err(|e| OAuthError::Transport(scrub(&e, &[secret])))?;
        if !status.is_success() {
            // The identity platform answers with an OAuth error object; keep
            // only its code and description, scrubbed, never the raw body.
            let parsed: Option<TokenErrorResponse> = serde_json::from_slice(&body).ok();
            let (error, description) = match parsed {
                Some(e) => (
                    e.error.unwrap_or_else(|| "unknown_error".into()),
                    e.error_description.map(|d| scrub(&d, &[secret])),
                ),
                None => ("unknown_error".into(), None),
            };
            return Err(OAuthError::Refused {
                status: status.as_u16(),
                error: scrub(&error, &[secret]),
                description,
            });
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| OAuthError::BadResponse(format!("not a token response ({})", e.classify_name())))?;
        let token = parsed
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| OAuthError::BadResponse("no access_token".into()))?;
        if let Some(kind) = parsed.token_type.as_deref() {
            if !kind.eq_ignore_ascii_case("bearer") {
                return Err(OAuthError::BadResponse(format!(
                    "token_type {:?} is not Bearer",
                    scrub(kind, &[secret, &token])
                )));
            }
        }
        // The identity platform says 3599 s; assume an hour if it says nothing.
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(3600));
        let refresh_at = started + refresh_after(lifetime);
        tracing::debug!(
            token_url = %self.creds.token_url,
            client_id = %self.creds.client_id,
            expires_in_s = lifetime.as_secs(),
            "fetched an OAuth2 access token"
        );
        Ok(Cached { token, refresh_at })
    }
}

/// When to refresh a token that lives `lifetime`: [`REFRESH_MARGIN`] before
/// it expires, or halfway through for short-lived tokens, where the margin
/// would mean refreshing on every call.
fn refresh_after(lifetime: Duration) -> Duration {
    if lifetime > REFRESH_MARGIN * 2 {
        lifetime - REFRESH_MARGIN
    } else {
        lifetime / 2
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    /// serde_json's messages may quote the input; only the category is safe.
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected shape",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// Reads a response body of at most `limit` bytes.
async fn read_capped(resp: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.without_url().to_string())? {
        if body.len() + chunk.len() > limit {
            return Err(format!("answer larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Replaces every occurrence of the `secrets` in text from elsewhere (a
/// server that echoes its input, say) and cuts it to a sane length.
pub(crate) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s, "***");
    }
    if out.len() > MAX_DESCRIPTION {
        let mut end = MAX_DESCRIPTION;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

/// SASL XOAUTH2 for IMAP `AUTHENTICATE XOAUTH2`, as Exchange Online and
/// Gmail want it: `user=<u>^Aauth=Bearer <t>^A^A` (async-imap base64-encodes it).
pub struct XOAuth2 {
    user: String,
    token: String,
    sent: bool,
}

impl XOAuth2 {
    pub fn new(user: impl Into<String>, token: impl Into<String>) -> XOAuth2 {
        XOAuth2 {
            user: user.into(),
            token: token.into(),
            sent: false,
        }
    }

    /// The initial client response, unencoded.
    pub fn initial_response(&self) -> String {
        format!("user={}\x01auth=Bearer {}\x01\x01", self.user, self.token)
    }
}

impl fmt::Debug for XOAuth2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XOAuth2")
            .field("user", &self.user)
            .field("token", &"***")
            .finish()
    }
}

impl async_imap::Authenticator for XOAuth2 {
    type Response = String;

    fn process(&mut self, _challenge: &[u8]) -> String {
        // After a refused token the server sends a JSON error as a second
        // challenge and waits for an empty response before its tagged NO;
        // sending the credentials again would only loop.
        if self.sent {
            return String::new();
        }
        self.sent = true;
        self.initial_response()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Secret;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use async_imap::Authenticator;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::post;
    use axum::Router;

    use super::*;

    const SECRET: &str = "s3cr3t-Vq~8Q~client-secret";

    #[test]
    fn xoauth2_bytes_are_exact() {
        let mut a = XOAuth2::new("canary@kommune.dk", "ya29.TOKEN");
        assert_eq!(
            a.process(b"").as_bytes(),
            b"user=canary@kommune.dk\x01auth=Bearer ya29.TOKEN\x01\x01"
        );
        // The error challenge after a refusal gets the empty response.
        assert_eq!(a.process(b"{\"status\":\"400\"}"), "");
        assert!(!format!("{a:?}").contains("ya29"));
    }

    #[test]
    fn refresh_point() {
        assert_eq!(refresh_after(Duration::from_secs(3599)), Duration::from_secs(3299));
        assert_eq!(refresh_after(Duration::from_secs(60)), Duration::from_secs(30));
    }

    #[derive(Clone)]
    struct Idp {
        calls: Arc<AtomicU32>,
        expires_in: u64,
        refuse: bool,
    }

    async fn token(State(idp): State<Idp>, body: String) -> axum::response::Response {
        let n = idp.calls.fetch_add(1, Ordering::SeqCst) + 1;
        // Slow enough that concurrent callers overlap.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if idp.refuse || !body.contains("client_secret=s3cr3t") {
            // An endpoint worse than the real one: it echoes what it got.
            let body = serde_json::json!({
                "error": "invalid_client",
                "error_description": format!("AADSTS7000215: Invalid client secret provided: {body}"),
            });
            return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        }
        axum::Json(serde_json::json!({
            "token_type": "Bearer",
            "expires_in": idp.expires_in,
            "ext_expires_in": idp.expires_in,
            "access_token": format!("tok-{n}"),
        }))
        .into_response()
    }

    async fn idp(expires_in: u64, refuse: bool) -> (SocketAddr, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let app = Router::new()
            .route("/tenant/oauth2/v2.0/token", post(token))
            .with_state(Idp {
                calls: calls.clone(),
                expires_in,
                refuse,
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, calls)
    }

    fn cache(addr: SocketAddr) -> TokenCache {
        TokenCache::new(
            ClientCredentials {
                token_url: format!("http://{addr}/tenant/oauth2/v2.0/token"),
                client_id: "app-id".into(),
                client_secret: Secret::new(SECRET),
                scope: "https://graph.microsoft.com/.default".into(),
            },
            reqwest::Client::builder().no_proxy().build().unwrap(),
        )
    }

    #[tokio::test]
    async fn caches_and_refreshes_once_for_concurrent_callers() {
        let (addr, calls) = idp(3599, false).await;
        let c = Arc::new(cache(addr));
        let all = futures::future::join_all((0..8).map(|_| {
            let c = c.clone();
            async move { c.bearer().await.unwrap() }
        }))
        .await;
        assert!(all.iter().all(|t| t == "tok-1"), "{all:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // A 401 on tok-1: both callers invalidate, one refresh follows.
        c.invalidate("tok-1").await;
        assert_eq!(c.bearer().await.unwrap(), "tok-2");
        c.invalidate("tok-1").await;
        assert_eq!(c.bearer().await.unwrap(), "tok-2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn short_lived_tokens_are_refreshed_before_expiry() {
        let (addr, calls) = idp(1, false).await;
        let c = cache(addr);
        assert_eq!(c.bearer().await.unwrap(), "tok-1");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(c.bearer().await.unwrap(), "tok-2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn errors_never_carry_the_secret() {
        let (addr, _) = idp(3599, true).await;
        let c = cache(addr);
        let e = c.bearer().await.unwrap_err();
        let text = format!("{e} {e:?} {c:?}");
        assert!(matches!(e, OAuthError::Refused { status: 401, .. }), "{text}");
        assert!(text.contains("invalid_client"), "{text}");
        assert!(!text.contains(SECRET), "{text}");

        // Unreachable endpoint.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = listener.local_addr().unwrap();
        drop(listener);
        let e = cache(dead).bearer().await.unwrap_err();
        assert!(matches!(e, OAuthError::Transport(_)), "{e}");
        assert!(!format!("{e} {e:?}").contains(SECRET));
    }
}
