//! A TCP fault proxy on 127.0.0.1 for the trust tests: put it in front of an
//! IMAP server and control it at run time. `pass` forwards both ways; `cut`
//! closes every open connection and closes new ones at once until `restore`;
//! `swallow_exists(true)` drops the server's untagged `* <n> EXISTS` and
//! `* <n> RECENT` lines (line-based, CRLF), modelling a server whose IDLE
//! never pushes. It counts accepted connections, so a test can bound logins.
//! Plain std threads; it stops when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    cut: AtomicBool,
    swallow: AtomicBool,
    stop: AtomicBool,
    accepted: AtomicUsize,
    /// Accept times, for "at most N connections in a window".
    accepted_at: Mutex<Vec<Instant>>,
    open: Mutex<Vec<TcpStream>>,
}

pub struct FaultProxy {
    pub port: u16,
    state: Arc<State>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(State::default());
        let st = Arc::clone(&state);
        std::thread::spawn(move || {
            while !st.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        st.accepted.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut v) = st.accepted_at.lock() {
                            v.push(Instant::now());
                        }
                        if st.cut.load(Ordering::Relaxed) {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        }
                        let st = Arc::clone(&st);
                        std::thread::spawn(move || connect(client, upstream, st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy { port, state }
    }

    pub fn pass(&self) {
        self.state.swallow.store(false, Ordering::Relaxed);
        self.restore();
    }

    /// Closes every open connection; new ones are closed at once until `restore`.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::Relaxed);
        if let Ok(mut open) = self.state.open.lock() {
            for s in open.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::Relaxed);
    }

    pub fn swallow_exists(&self, on: bool) {
        self.state.swallow.store(on, Ordering::Relaxed);
    }

    /// Connections accepted so far (including those closed by `cut`).
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::Relaxed)
    }

    /// Connections accepted within the last `window`.
    pub fn accepted_within(&self, window: Duration) -> usize {
        let now = Instant::now();
        self.state
            .accepted_at
            .lock()
            .map(|v| v.iter().filter(|t| now.duration_since(**t) <= window).count())
            .unwrap_or(0)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

fn connect(client: TcpStream, upstream: u16, st: Arc<State>) {
    let _ = client.set_nonblocking(false);
    let server = match TcpStream::connect(("127.0.0.1", upstream)) {
        Ok(s) => s,
        Err(_) => {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    if let Ok(mut open) = st.open.lock() {
        for s in [&client, &server] {
            if let Ok(c) = s.try_clone() {
                open.push(c);
            }
        }
    }
    let (c2, s2) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    // client → server: bytes as they come.
    std::thread::spawn(move || {
        let (mut from, mut to) = (c2, s2);
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
    // server → client: line by line while swallowing, so untagged
    // EXISTS/RECENT can be dropped; otherwise bytes as they come (binary
    // protocols such as PostgreSQL's have no lines).
    let mut r = BufReader::new(server);
    let mut w = client;
    let mut line = Vec::new();
    loop {
        if !st.swallow.load(Ordering::Relaxed) {
            let chunk = match r.fill_buf() {
                Ok(b) if !b.is_empty() => b.to_vec(),
                _ => break,
            };
            r.consume(chunk.len());
            if w.write_all(&chunk).is_err() {
                break;
            }
            continue;
        }
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if st.swallow.load(Ordering::Relaxed) && is_exists_or_recent(&line) {
            continue;
        }
        if w.write_all(&line).is_err() {
            break;
        }
    }
    let _ = w.shutdown(Shutdown::Both);
    let _ = r.get_ref().shutdown(Shutdown::Both);
}

/// `* <n> EXISTS` or `* <n> RECENT`, case-insensitively.
fn is_exists_or_recent(line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.trim_end().split(' ');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("*"), Some(n), Some(w), None)
            if n.bytes().all(|b| b.is_ascii_digit())
                && (w.eq_ignore_ascii_case("EXISTS") || w.eq_ignore_ascii_case("RECENT"))
    )
}
