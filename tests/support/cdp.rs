//! A headless Chromium driven over the DevTools protocol through
//! `--remote-debugging-pipe` (JSON messages ended by NUL on fds 3 and 4):
//! enough to open a page with credentials, read the DOM, submit the page's
//! own forms and take screenshots, with no extra crate or download.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct Browser {
    child: Child,
    to: File,
    from: BufReader<File>,
    next: u64,
    _profile: tempfile::TempDir,
}

/// A tab attached with its own session.
pub struct Tab {
    pub session: String,
}

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2");
    (fds[0], fds[1])
}

pub fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

impl Browser {
    pub fn launch(bin: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let (cmd_r, cmd_w) = pipe();
        let (resp_r, resp_w) = pipe();
        let mut c = Command::new(bin);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only dup2 (async-signal-safe) between fork and exec.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(cmd_r, 3) < 0 || libc::dup2(resp_w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().unwrap();
        // SAFETY: these fds are ours; the child's copies are 3 and 4.
        unsafe {
            libc::close(cmd_r);
            libc::close(resp_w);
        }
        // SAFETY: we own these fds from here on.
        let (to, from) = unsafe { (File::from_raw_fd(cmd_w), File::from_raw_fd(resp_r)) };
        Browser {
            child,
            to,
            from: BufReader::new(from),
            next: 0,
            _profile: profile,
        }
    }

    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> u64 {
        self.next += 1;
        let mut msg = json!({ "id": self.next, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        self.next
    }

    fn read(&mut self) -> Value {
        let mut buf = Vec::new();
        let n = self.from.read_until(0, &mut buf).unwrap();
        assert!(n > 0, "chromium closed the pipe");
        buf.pop();
        serde_json::from_slice(&buf).unwrap()
    }

    /// Calls a method and returns its result (panics on a protocol error).
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.send(session, method, params);
        loop {
            let m = self.read();
            if m["id"] == json!(id) {
                assert!(m.get("error").is_none(), "{method}: {m}");
                return m["result"].clone();
            }
        }
    }

    /// Waits (bounded) for an event of a session.
    pub fn event(&mut self, session: &str, name: &str, limit: Duration) -> Value {
        let end = Instant::now() + limit;
        loop {
            assert!(Instant::now() < end, "no {name} within {limit:?}");
            let m = self.read();
            if m["method"] == name && m["sessionId"] == session {
                return m["params"].clone();
            }
        }
    }

    /// A new tab with an Authorization header on every request, at a phone's width.
    pub fn tab(&mut self, authorization: &str, width: u32, height: u32) -> Tab {
        let t = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let target = t["targetId"].as_str().unwrap().to_string();
        let a = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        let session = a["sessionId"].as_str().unwrap().to_string();
        let s = Some(session.as_str());
        self.call(s, "Page.enable", json!({}));
        self.call(s, "Network.enable", json!({}));
        self.call(
            s,
            "Network.setExtraHTTPHeaders",
            json!({ "headers": { "Authorization": authorization } }),
        );
        self.call(
            s,
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600 }),
        );
        Tab { session }
    }

    pub fn goto(&mut self, tab: &Tab, url: &str) {
        self.call(Some(&tab.session), "Page.navigate", json!({ "url": url }));
        self.event(&tab.session, "Page.loadEventFired", Duration::from_secs(30));
    }

    /// Evaluates an expression in the page (promises awaited) and returns its value.
    pub fn eval(&mut self, tab: &Tab, expr: &str) -> Value {
        let r = self.call(
            Some(&tab.session),
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Runs an expression that submits a form, and waits for the next page.
    pub fn submit(&mut self, tab: &Tab, expr: &str) {
        self.eval(tab, expr);
        self.event(&tab.session, "Page.loadEventFired", Duration::from_secs(30));
    }

    pub fn screenshot(&mut self, tab: &Tab, path: &std::path::Path) {
        let r = self.call(Some(&tab.session), "Page.captureScreenshot", json!({ "format": "png" }));
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
