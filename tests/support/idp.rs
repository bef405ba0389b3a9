//! Real third-party identity providers on free loopback ports, one node child
//! each, killed when dropped: saml-idp (SAML 2.0 test IdP) and oidc-provider
//! (certified OpenID Provider). See tests/idp/README.md for the pages a
//! browser meets in each flow, and tests/idp/idp.sh for the install.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How long a server may take to print its READY line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

fn idp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/idp")
}

static INSTALL: OnceLock<Result<(), String>> = OnceLock::new();

/// Runs `tests/idp/idp.sh install` once per process (node, npm, openssl, npm ci).
pub fn install() -> Result<(), String> {
    INSTALL
        .get_or_init(|| {
            let out = Command::new("bash")
                .arg(idp_dir().join("idp.sh"))
                .arg("install")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running tests/idp/idp.sh install: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "tests/idp/idp.sh install failed ({}):\n{}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        })
        .clone()
}

/// Ports already handed out in this process: never hand one out twice.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free loopback port: bind 127.0.0.1:0, note the port, drop the listener.
fn free_port() -> Result<u16, String> {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    loop {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
        let port = l.local_addr().map_err(|e| e.to_string())?.port();
        if handed.insert(port) {
            return Ok(port);
        }
    }
}

fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

/// A node server started from tests/idp, with its stdin held open (it exits
/// when stdin closes) and its stderr collected for error messages.
struct NodeServer {
    child: Child,
    _stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<String>>,
    base_url: String,
}

impl NodeServer {
    /// Starts `node tests/idp/<script> --port P <args>` on a free port and waits
    /// for its `READY <base-url>` line; tries a new port when the start fails.
    fn start(script: &str, args: &[String]) -> Result<NodeServer, String> {
        install()?;
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            match Self::start_on(script, port, args) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn start_on(script: &str, port: u16, args: &[String]) -> Result<NodeServer, String> {
        let mut child = Command::new("node")
            .arg(idp_dir().join(script))
            .arg("--port")
            .arg(port.to_string())
            .args(args)
            .current_dir(idp_dir())
            .env_remove("PORT")
            .env_remove("HOST")
            .env_remove("NODE_OPTIONS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn node tests/idp/{script} (is node installed?): {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let stderr_pipe = child.stderr.take().ok_or("no stderr pipe")?;

        // Drain stderr all the time (saml-idp logs a lot), keeping it for errors.
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr_pipe);
            let mut buf = [0u8; 8192];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
                // Keep the tail only.
                if s.len() > 256 * 1024 {
                    let cut = s.len() - 128 * 1024;
                    let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                    s.drain(..cut);
                }
            }
        });

        // Stdout: the READY line, then drain whatever else comes.
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    sent = tx.send(line).is_ok();
                }
            }
        });

        let mut server = NodeServer {
            child,
            _stdin: stdin,
            stderr,
            base_url: String::new(),
        };
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => match line.strip_prefix("READY ") {
                Some(url) => {
                    server.base_url = url.trim().trim_end_matches('/').to_string();
                    Ok(server)
                }
                None => Err(server.failure(&format!("unexpected first line {line:?}"))),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(server.failure(&format!("no READY line within {}s", READY_TIMEOUT.as_secs())))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(server.failure("exited before printing READY")),
        }
    }

    fn failure(&mut self, what: &str) -> String {
        let _ = self.child.kill();
        let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
        // Give the stderr reader a moment to collect the last words.
        std::thread::sleep(Duration::from_millis(200));
        format!("node server {what} ({status}); stderr:\n{}", self.stderr())
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// saml-idp on loopback, signing with a key and self-signed certificate made
/// by the openssl CLI in a temp dir. SP-initiated SSO: HTTP-Redirect (GET) or
/// HTTP-POST to `sso_url`; the response is an auto-submit form POSTing
/// `SAMLResponse` and `RelayState` to the ACS URL of the AuthnRequest (or
/// `acs_url` when the request names none).
pub struct SamlIdp {
    /// `http://127.0.0.1:P`
    pub base_url: String,
    /// `{base_url}/saml/sso` (HTTP-Redirect and HTTP-POST bindings)
    pub sso_url: String,
    /// `{base_url}/signin`: where the user form posts
    pub signin_url: String,
    /// `{base_url}/metadata`: IdP metadata (EntityDescriptor)
    pub metadata_url: String,
    /// The IdP entity id, the Issuer of its responses and assertions: `{base_url}/metadata`
    pub entity_id: String,
    /// The signing certificate (PEM)
    pub cert_pem: String,
    /// The default ACS URL (used when the AuthnRequest names none)
    pub acs_url: String,
    /// The SP entity id: the assertion's Audience
    pub sp_entity_id: String,
    server: NodeServer,
    _dir: tempfile::TempDir,
}

impl SamlIdp {
    pub fn start(acs_url: &str, sp_entity_id: &str) -> Result<SamlIdp, String> {
        install()?;
        let dir = tempfile::Builder::new()
            .prefix("pc-saml-idp-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let cert = dir.path().join("idp-cert.pem");
        let key = dir.path().join("idp-key.pem");
        let out = Command::new("openssl")
            .args(["req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256"])
            .args(["-days", "2", "-subj", "/CN=postcanary test SAML IdP"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running openssl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "openssl req failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let cert_pem = std::fs::read_to_string(&cert).map_err(|e| format!("read cert: {e}"))?;
        let args = vec![
            "--acs-url".to_string(),
            acs_url.to_string(),
            "--audience".to_string(),
            sp_entity_id.to_string(),
            "--cert".to_string(),
            cert.to_string_lossy().to_string(),
            "--key".to_string(),
            key.to_string_lossy().to_string(),
        ];
        let server = NodeServer::start("saml.mjs", &args)?;
        let base = server.base_url.clone();
        Ok(SamlIdp {
            sso_url: format!("{base}/saml/sso"),
            signin_url: format!("{base}/signin"),
            metadata_url: format!("{base}/metadata"),
            entity_id: format!("{base}/metadata"),
            base_url: base,
            cert_pem,
            acs_url: acs_url.to_string(),
            sp_entity_id: sp_entity_id.to_string(),
            server,
            _dir: dir,
        })
    }

    /// What the IdP has logged so far (its stderr).
    pub fn log(&self) -> String {
        self.server.stderr()
    }
}

/// oidc-provider on loopback with its dev login form (any login, any password)
/// and a consent step; one confidential client (`client_secret_basic`,
/// response type `code`, PKCE optional) for the given redirect URI.
pub struct OidcProvider {
    /// `http://127.0.0.1:P`
    pub issuer: String,
    /// `{issuer}/.well-known/openid-configuration`
    pub discovery_url: String,
    /// `{issuer}/auth`
    pub authorization_endpoint: String,
    /// `{issuer}/token`
    pub token_endpoint: String,
    /// `{issuer}/me`
    pub userinfo_endpoint: String,
    /// `{issuer}/jwks`
    pub jwks_uri: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    server: NodeServer,
}

impl OidcProvider {
    pub fn start(redirect_uri: &str) -> Result<OidcProvider, String> {
        let client_id = format!("postcanary-{}", random_hex(4));
        let client_secret = random_hex(24);
        let args = vec![
            "--client-id".to_string(),
            client_id.clone(),
            "--client-secret".to_string(),
            client_secret.clone(),
            "--redirect-uri".to_string(),
            redirect_uri.to_string(),
        ];
        let server = NodeServer::start("oidc.mjs", &args)?;
        let issuer = server.base_url.clone();
        Ok(OidcProvider {
            discovery_url: format!("{issuer}/.well-known/openid-configuration"),
            authorization_endpoint: format!("{issuer}/auth"),
            token_endpoint: format!("{issuer}/token"),
            userinfo_endpoint: format!("{issuer}/me"),
            jwks_uri: format!("{issuer}/jwks"),
            issuer,
            client_id,
            client_secret,
            redirect_uri: redirect_uri.to_string(),
            server,
        })
    }

    /// What the provider has logged so far (its stderr).
    pub fn log(&self) -> String {
        self.server.stderr()
    }
}
