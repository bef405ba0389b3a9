//! A private PostgreSQL for one test, on a free loopback port, from a temp
//! dir; stopped when dropped. See tests/postgres/postgres.sh.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use postcanary::config::ledger::{parse_postgres, LedgerTls, PostgresLedger};
use postcanary::config::Secret;

pub struct Postgres {
    pub dir: tempfile::TempDir,
    /// The cluster's own directory (data, ca.pem, logs), inside `dir`.
    pub cluster: PathBuf,
    pub port: u16,
    pub password: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/postgres/postgres.sh")
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "postgres.sh {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

static INSTALL: Once = Once::new();

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Postgres {
    pub fn start() -> Postgres {
        INSTALL.call_once(|| run(&["install"]).unwrap_or_else(|e| panic!("{e}")));
        let dir = tempfile::Builder::new()
            .prefix("pc-postgres-")
            .tempdir()
            .expect("temp dir");
        // As root the cluster belongs to the `postgres` user, who must reach it.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
        }
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let d = dir.path().join(format!("pg{port}"));
            match run(&["start", &d.to_string_lossy(), &port.to_string()]) {
                Ok(()) => {
                    let password = std::fs::read_to_string(d.join("password"))
                        .expect("read password")
                        .trim()
                        .to_string();
                    return Postgres {
                        dir,
                        cluster: d,
                        port,
                        password,
                    };
                }
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    pub fn ca_file(&self) -> PathBuf {
        self.cluster.join("ca.pem")
    }

    /// The URL of the `postcanary` database through `port` (this server's, or a proxy's).
    pub fn url_via(&self, port: u16) -> String {
        format!("postgres://postcanary@127.0.0.1:{port}/postcanary")
    }

    pub fn url(&self) -> String {
        self.url_via(self.port)
    }

    /// A ledger config: plain TCP (loopback), the password given directly.
    pub fn ledger(&self) -> PostgresLedger {
        self.ledger_db("postcanary")
    }

    /// [`Postgres::ledger`] on another database (see [`Postgres::create_db`]).
    pub fn ledger_db(&self, db: &str) -> PostgresLedger {
        parse_postgres(
            &format!("postgres://postcanary@127.0.0.1:{}/{db}", self.port),
            Some(Secret::new(self.password.clone())),
            Some(LedgerTls::None),
            None,
            Some(8),
        )
        .expect("ledger config")
    }

    /// A ledger config over TLS, verified against the cluster's throwaway CA.
    pub fn ledger_tls(&self) -> PostgresLedger {
        parse_postgres(
            &self.url().replace("127.0.0.1", "localhost"),
            Some(Secret::new(self.password.clone())),
            Some(LedgerTls::Require),
            Some(self.ca_file()),
            Some(8),
        )
        .expect("ledger config")
    }

    /// Creates a fresh database.
    pub fn create_db(&self, name: &str) {
        self.psql(&format!("CREATE DATABASE {name}"));
    }

    /// Runs one SQL command as the superuser on the `postgres` database.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_on("postgres", sql)
    }

    pub fn psql_on(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .env("PGPASSWORD", &self.password)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postcanary",
                "-d",
                db,
            ])
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = run(&["stop", &self.cluster.to_string_lossy()]);
    }
}
