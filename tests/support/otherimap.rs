//! A second real IMAP server for one test: Debian's Courier IMAP, extracted
//! from its .debs and run in a private mount namespace, fed by a private
//! Postfix that delivers into its Maildirs; on free loopback ports, from a
//! temp dir, stopped when dropped. See tests/otherimap/otherimap.sh.
//!
//! [`Courier::start`] fails loudly when the server cannot be fetched or
//! started. The one exception, outside CI only: a machine without apt-get
//! (or not root, which `unshare -m` needs) cannot have it, and gets `None`
//! with the reason printed.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, Once};

pub struct Courier {
    pub dir: tempfile::TempDir,
    pub smtp_port: u16,
    pub imap_port: u16,
    env: HashMap<String, String>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otherimap/otherimap.sh")
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
            "otherimap.sh {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Why this machine cannot have Courier at all (never in CI), if so.
fn unavailable() -> Option<String> {
    if std::env::var_os("CI").is_some() {
        return None;
    }
    let has = |cmd: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !has("apt-get") || !has("dpkg") {
        return Some("apt-get/dpkg not found: Courier IMAP is fetched from Debian's packages".into());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        return Some("not root: the Courier test runs the server in a private mount namespace".into());
    }
    None
}

static INSTALL: Once = Once::new();
static INSTALLED: Mutex<Option<Result<(), String>>> = Mutex::new(None);

fn free_ports() -> [u16; 2] {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    [
        a.local_addr().expect("addr").port(),
        b.local_addr().expect("addr").port(),
    ]
}

impl Courier {
    /// Courier + Postfix, or `None` (printed) on a machine that cannot have them outside CI.
    pub fn start() -> Option<Courier> {
        if let Some(why) = unavailable() {
            eprintln!("SKIPPED: Courier IMAP test: {why}");
            return None;
        }
        INSTALL.call_once(|| {
            let r = run(&["install"]);
            if let Ok(mut g) = INSTALLED.lock() {
                *g = Some(r);
            }
        });
        let installed = INSTALLED.lock().ok().and_then(|g| g.clone());
        if let Some(Err(e)) = installed {
            panic!("Courier IMAP could not be installed: {e}");
        }
        let dir = tempfile::Builder::new()
            .prefix("pc-courier-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path().to_string_lossy().to_string();
        for attempt in 0..3 {
            let ports = free_ports();
            match run(&["start", &d, &ports[0].to_string(), &ports[1].to_string()]) {
                Ok(()) => {
                    let text = std::fs::read_to_string(dir.path().join("env")).expect("read env");
                    let env = text
                        .lines()
                        .filter_map(|l| l.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    return Some(Courier {
                        dir,
                        smtp_port: ports[0],
                        imap_port: ports[1],
                        env,
                    });
                }
                Err(e) if attempt == 2 => panic!("Courier IMAP did not start: {e}"),
                Err(e) => {
                    eprintln!("Courier start failed, retrying: {e}");
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

    pub fn stop_imap(&self) {
        run(&["stop-imap", &self.dir_str()]).unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn start_imap(&self) {
        run(&["start-imap", &self.dir_str()]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// The Maildir of `user`'s folder (`""` for INBOX, `"Junk"` for INBOX.Junk).
    pub fn maildir(&self, user: &str, folder: &str) -> PathBuf {
        let m = self.dir.path().join("mail").join(user).join("Maildir");
        if folder.is_empty() {
            m
        } else {
            m.join(format!(".{folder}"))
        }
    }

    /// Messages in a folder, counted in the Maildir itself (new/ and cur/).
    pub fn count(&self, user: &str, folder: &str) -> usize {
        let m = self.maildir(user, folder);
        ["new", "cur"]
            .iter()
            .map(|sub| std::fs::read_dir(m.join(sub)).map(|d| d.count()).unwrap_or(0))
            .sum()
    }

    pub fn log_tail(&self) -> String {
        let tail = |p: PathBuf| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        format!(
            "---- postfix\n{}\n---- courier\n{}",
            tail(self.dir.path().join("postfix/maillog")),
            tail(self.dir.path().join("courier/imapd.log"))
        )
    }
}

impl Drop for Courier {
    fn drop(&mut self) {
        let _ = run(&["stop", &self.dir_str()]);
    }
}
