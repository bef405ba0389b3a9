//! Several `postcanary run` daemons with `[ledger] ha` on one private
//! PostgreSQL, against the in-process sandbox and a webhook receiver: the rig
//! of tests/ha_e2e.rs and benches/failover.rs.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use postcanary::sandbox::{MailStore, Route, Sandbox, SandboxOptions};

use super::postgres::Postgres;
use super::receiver::Receiver;

/// The lease of the daemons.
pub const LEASE: Duration = Duration::from_secs(6);

/// One `postcanary run` process.
pub struct Daemon {
    pub name: String,
    pub child: Option<Child>,
    pub http: u16,
    pub log: std::path::PathBuf,
}

impl Daemon {
    pub fn start(dir: &Path, name: &str, config: &str, pg_password: &str) -> Daemon {
        let http = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            config.replace("@INSTANCE@", name).replace("@HTTP@", &http.to_string()),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_postcanary"))
            .args(["run", "-c"])
            .arg(&path)
            .env("PC_TEST_PG_PASSWORD", pg_password)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon {
            name: name.into(),
            child: Some(child),
            http,
            log,
        }
    }

    /// "active", "standby", or "" when it does not answer.
    pub async fn role(&self) -> String {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(800))
            .build()
            .unwrap();
        match client
            .get(format!("http://127.0.0.1:{}/healthz", self.http))
            .send()
            .await
        {
            Ok(r) => r
                .headers()
                .get("x-postcanary-role")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            Err(_) => String::new(),
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "---- {} ----\n{}",
            self.name,
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn logs(ds: &[Daemon]) -> String {
    ds.iter().map(Daemon::log_tail).collect::<Vec<_>>().join("\n")
}

/// Waits until exactly one of `ds` says active; returns its index.
pub async fn wait_active(ds: &[Daemon], among: &[usize], limit: Duration) -> Option<usize> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let mut active = Vec::new();
        for &i in among {
            if ds[i].role().await == "active" {
                active.push(i);
            }
        }
        assert!(
            active.len() <= 1,
            "two active instances at once: {active:?}\n{}",
            logs(ds)
        );
        if let [one] = active[..] {
            return Some(one);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

pub async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    f()
}

pub struct Setup {
    pub pg: Postgres,
    pub sandbox: Sandbox,
    pub hook: Receiver,
    pub dir: tempfile::TempDir,
    pub config: String,
}

/// How the channels of [`setup_with`] are probed.
pub struct Shape<'a> {
    /// `schedule = "every …"`.
    pub every: &'a str,
    pub jitter: &'a str,
    pub deadline: &'a str,
    /// `after_confirm` of the one inbox (`None`: the default, keep).
    pub after_confirm: Option<&'a str>,
    /// Sessions the sandbox's SMTP server takes at once.
    pub smtp_sessions: usize,
}

/// A PostgreSQL, the sandbox mail servers and a webhook receiver, and the
/// HA config of the daemons (`@PGPORT@`, `@INSTANCE@`, `@HTTP@` to fill in):
/// `deliver` channels that arrive, `holes` black holes; every `every`, deadline 5 s.
pub async fn setup(deliver: usize, holes: usize, every: &str) -> Setup {
    let shape = Shape {
        every,
        jitter: "1s",
        deadline: "5s",
        after_confirm: None,
        smtp_sessions: postcanary::sandbox::SmtpOptions::default().max_sessions,
    };
    setup_with(deliver, holes, &shape).await
}

/// [`setup`] with the probing of `shape` (the 10,000-channel benchmark).
pub async fn setup_with(deliver: usize, holes: usize, shape: &Shape<'_>) -> Setup {
    let pg = Postgres::start();
    let store = MailStore::new();
    store.add_user("canary", "secret");
    store.set_default_route(Route::deliver("canary", "INBOX"));
    for i in 0..holes {
        store.set_route(&format!("hole{i}@sandbox.test"), Route::Discard);
    }
    let options = SandboxOptions {
        smtp: postcanary::sandbox::SmtpOptions {
            max_sessions: shape.smtp_sessions,
            ..Default::default()
        },
        ..SandboxOptions::default()
    };
    let sandbox = Sandbox::start(store, options).await.unwrap();
    let hook = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "secret").unwrap();
    let mut config = format!(
        r#"[ledger]
url = "postgres://postcanary@127.0.0.1:@PGPORT@/postcanary"
password = "env:PC_TEST_PG_PASSWORD"
tls = "none"
ha = true
lease = "{lease}s"
instance = "@INSTANCE@"

[server]
listen = "127.0.0.1:@HTTP@"

[defaults]
notify = ["ops"]
schedule = "every {every}"
jitter = "{jitter}"
deadline = "{deadline}"

[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = {smtp}
tls = "none"
from = "canary@sandbox.test"

[[inbox]]
name = "social"
kind = "imap"
host = "127.0.0.1"
port = {imap}
tls = "none"
username = "canary"
password = "file:pw"
poll_interval = "60s"
{after_confirm}

[[notifier]]
name = "ops"
kind = "webhook"
url = "{url}"
"#,
        lease = LEASE.as_secs(),
        every = shape.every,
        jitter = shape.jitter,
        deadline = shape.deadline,
        after_confirm = shape
            .after_confirm
            .map(|a| format!("after_confirm = \"{a}\""))
            .unwrap_or_default(),
        smtp = sandbox.smtp_addr().port(),
        imap = sandbox.imap_addr().port(),
        url = hook.url("/hook"),
    );
    for i in 0..deliver {
        config.push_str(&format!(
            "\n[[channel]]\nid = \"ch-{i}\"\nname = \"Channel {i}\"\nkind = \"mail\"\nto = \"ch{i}@sandbox.test\"\nvia = \"relay\"\ninbox = \"social\"\n"
        ));
    }
    for i in 0..holes {
        config.push_str(&format!(
            "\n[[channel]]\nid = \"hole-{i}\"\nname = \"Hole {i}\"\nkind = \"mail\"\nto = \"hole{i}@sandbox.test\"\nvia = \"relay\"\ninbox = \"social\"\n"
        ));
    }
    Setup {
        pg,
        sandbox,
        hook,
        dir,
        config,
    }
}

pub fn count(pg: &Postgres, sql: &str) -> i64 {
    pg.psql_on("postcanary", sql).parse().unwrap_or(-1)
}

/// (dedup_key, event) of every page the receiver accepted, with how often.
pub fn accepted(hook: &Receiver) -> BTreeMap<(String, String), usize> {
    let mut m = BTreeMap::new();
    for r in hook.accepted() {
        let v = r.json();
        let key = (
            v["dedup_key"].as_str().unwrap_or("").to_string(),
            v["event"].as_str().unwrap_or("").to_string(),
        );
        *m.entry(key).or_insert(0) += 1;
    }
    m
}

/// (dedup_key, event) of every page in the outbox.
pub fn queued(pg: &Postgres) -> BTreeSet<(String, String)> {
    pg.psql_on("postcanary", "SELECT dedup_key || '|' || event FROM outbox ORDER BY id")
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(k, e)| (k.to_string(), e.to_string()))
        .collect()
}
