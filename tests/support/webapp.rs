//! The Django site of tests/webapp on loopback over HTTPS: gunicorn with its
//! own TLS and a certificate from an internal CA that openssl makes per
//! start (the CA is not in any root store: a client trusts it only through
//! `ca_file`). One process, killed on drop. See tests/webapp/pcsite/.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static PYTHON: OnceLock<Result<String, String>> = OnceLock::new();

/// Runs `tests/webapp/webapp.sh install` once per process; the venv's python.
pub fn install() -> Result<String, String> {
    PYTHON
        .get_or_init(|| {
            let out = Command::new("bash")
                .arg(dir().join("webapp.sh"))
                .arg("install")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running tests/webapp/webapp.sh: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "webapp.sh install failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .clone()
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webapp")
}

pub struct WebApp {
    /// `https://127.0.0.1:P`: the contact form, the wizard, the OIDC provider.
    pub base: String,
    /// `https://localhost:P`: the service that logs in with the provider.
    pub service: String,
    /// The internal CA's certificate (PEM file).
    pub ca: PathBuf,
    pub user: String,
    pub password: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for WebApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(args: &[&str], cwd: &Path) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

impl WebApp {
    pub fn start(smtp_port: u16, recipient: &str) -> Result<WebApp, String> {
        let python = install()?;
        let tmp = tempfile::Builder::new()
            .prefix("pc-webapp-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let d = tmp.path();
        openssl(
            &[
                "req",
                "-x509",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-sha256",
                "-days",
                "2",
                "-subj",
                "/CN=Testkommune intern CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
            d,
        )?;
        openssl(
            &[
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "srv.key",
                "-out",
                "srv.csr",
            ],
            d,
        )?;
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .map_err(|e| e.to_string())?;
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "srv.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-sha256",
                "-extfile",
                "ext.cnf",
                "-out",
                "srv.pem",
            ],
            d,
        )?;
        openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "oidc.key",
            ],
            d,
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let env = |c: &mut Command| {
            c.current_dir(d)
                .env("PYTHONPATH", dir())
                .env("DJANGO_SETTINGS_MODULE", "pcsite.settings")
                .env("PC_DB", d.join("db.sqlite3"))
                .env("PC_PORT", port.to_string())
                .env("PC_CA", d.join("ca.pem"))
                .env("PC_CLIENT_ID", "erhverv")
                .env("PC_CLIENT_SECRET", "klient-hemmelighed-1")
                .env("PC_OIDC_KEY", d.join("oidc.key"))
                .env("PC_USER", "borger1")
                .env("PC_PASSWORD", "Hemmelig-123")
                .env("PC_SMTP_PORT", smtp_port.to_string())
                .env("PC_RECIPIENT", recipient)
                .stdin(Stdio::null());
        };
        let mut setup = Command::new(&python);
        setup.args(["-m", "pcsite.setup"]);
        env(&mut setup);
        let out = setup.output().map_err(|e| format!("python -m pcsite.setup: {e}"))?;
        if !out.status.success() {
            return Err(format!("pcsite.setup: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let log = d.join("gunicorn.log");
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut g = Command::new(&python);
        g.args(["-m", "gunicorn", "--bind"])
            .arg(format!("127.0.0.1:{port}"))
            .args([
                "--certfile",
                "srv.pem",
                "--keyfile",
                "srv.key",
                "--workers",
                "1",
                "--threads",
                "4",
            ])
            .args(["--timeout", "60", "pcsite.wsgi"]);
        env(&mut g);
        g.stdout(Stdio::null()).stderr(log_file);
        let child = g.spawn().map_err(|e| format!("gunicorn: {e}"))?;
        let app = WebApp {
            base: format!("https://127.0.0.1:{port}"),
            service: format!("https://localhost:{port}"),
            ca: d.join("ca.pem"),
            user: "borger1".into(),
            password: "Hemmelig-123".into(),
            child,
            log,
            _dir: tmp,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("gunicorn did not listen within 30 s:\n{}", app.log()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(app)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
