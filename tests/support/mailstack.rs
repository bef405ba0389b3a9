//! A private Postfix + Dovecot for one test, on free loopback ports, from a
//! temp dir; stopped when dropped. See tests/mailstack/mailstack.sh.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, Once};

pub struct MailStack {
    pub dir: tempfile::TempDir,
    pub smtp_port: u16,
    pub submission_port: u16,
    pub imap_port: u16,
    pub lmtp_port: u16,
    env: HashMap<String, String>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mailstack/mailstack.sh")
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
            "mailstack.sh {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Ports already handed to a stack in this process: never hand one out twice,
/// even after the listener that found it free is closed.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Four distinct free loopback ports (bound together, then released).
fn free_ports() -> [u16; 4] {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < 4 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("local addr").port();
        if handed.insert(port) {
            ports.push(port);
        }
        listeners.push(l);
    }
    [ports[0], ports[1], ports[2], ports[3]]
}

static INSTALL: Once = Once::new();

impl MailStack {
    pub fn start() -> MailStack {
        INSTALL.call_once(|| run(&["install"]).unwrap_or_else(|e| panic!("{e}")));
        let dir = tempfile::Builder::new()
            .prefix("pc-mailstack-")
            .tempdir()
            .expect("temp dir");
        // Ports are picked free, then bound by the servers; retry on the rare collision.
        for attempt in 0..3 {
            let ports = free_ports();
            let p: Vec<String> = ports.iter().map(u16::to_string).collect();
            let d = dir.path().to_string_lossy().to_string();
            match run(&["start", &d, &p[0], &p[1], &p[2], &p[3]]) {
                Ok(()) => {
                    let text = std::fs::read_to_string(dir.path().join("env")).expect("read env");
                    let env = text
                        .lines()
                        .filter_map(|l| l.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    return MailStack {
                        dir,
                        smtp_port: ports[0],
                        submission_port: ports[1],
                        imap_port: ports[2],
                        lmtp_port: ports[3],
                        env,
                    };
                }
                Err(e) if attempt == 2 => panic!("{e}"),
                Err(e) => {
                    eprintln!("mail stack start failed, retrying: {e}");
                    let _ = run(&["stop", &d]);
                }
            }
        }
        unreachable!()
    }

    pub fn password(&self, user: &str) -> String {
        self.env
            .get(&format!("PASS_{user}"))
            .cloned()
            .unwrap_or_else(|| panic!("no mailbox user {user}"))
    }

    fn dir_str(&self) -> String {
        self.dir.path().to_string_lossy().to_string()
    }

    pub fn restart_imap(&self) {
        run(&["restart-imap", &self.dir_str()]).unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn reload_postfix(&self) {
        run(&["reload", &self.dir_str()]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Overwrites one of Postfix's texthash maps (`virtual`, `transport`, `vmailbox`) and reloads.
    pub fn set_map(&self, map: &str, contents: &str) {
        std::fs::write(self.dir.path().join("postfix").join(map), contents).expect("write map");
        self.reload_postfix();
    }

    pub fn log_tail(&self) -> String {
        let tail = |p: PathBuf| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        format!(
            "---- postfix\n{}\n---- dovecot\n{}",
            tail(self.dir.path().join("postfix/maillog")),
            tail(self.dir.path().join("dovecot/dovecot.log"))
        )
    }
}

impl Drop for MailStack {
    fn drop(&mut self) {
        let _ = run(&["stop", &self.dir_str()]);
    }
}
