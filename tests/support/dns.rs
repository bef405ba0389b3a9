//! A real authoritative DNS server on loopback for the tests: Debian's
//! dnsmasq (package dnsmasq-base, installed by scripts/test.sh), answering
//! only from its own records (no upstream, no /etc/hosts), on a free port.
//! Names under the zone that have no record get NXDOMAIN, a name with other
//! types NODATA, anything outside the zone REFUSED.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The records of one zone.
#[derive(Clone, Debug)]
pub struct Zone {
    domain: String,
    lines: Vec<String>,
}

impl Zone {
    pub fn new(domain: &str) -> Zone {
        Zone {
            domain: domain.to_string(),
            lines: Vec::new(),
        }
    }
    pub fn mx(mut self, preference: u16, host: &str) -> Zone {
        self.lines.push(format!("mx-host={},{host},{preference}", self.domain));
        self
    }
    pub fn a(mut self, name: &str, ip: &str) -> Zone {
        self.lines.push(format!("host-record={name},{ip}"));
        self
    }
    pub fn txt(mut self, name: &str, value: &str) -> Zone {
        self.lines
            .push(format!("txt-record={name},\"{}\"", value.replace('"', "")));
        self
    }
    fn conf(&self, extra_local: &[String]) -> String {
        let mut out = self.lines.join("\n");
        out.push_str(&format!("\nlocal=/{}/\n", self.domain));
        for d in extra_local {
            out.push_str(&format!("local=/{d}/\n"));
        }
        out
    }
    /// Other domains named by its records (an MX in another domain), answered locally too.
    fn other_domains(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix("host-record="))
            .filter_map(|r| r.split(',').next())
            .filter_map(|name| name.split_once('.').map(|(_, d)| d.to_string()))
            .filter(|d| d != &self.domain)
            .collect()
    }
}

pub struct DnsServer {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
}

fn free_port() -> u16 {
    for _ in 0..50 {
        let Ok(udp) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = udp.local_addr() else { continue };
        if TcpListener::bind(addr).is_ok() {
            return addr.port();
        }
    }
    panic!("no free loopback port for dnsmasq");
}

impl DnsServer {
    pub fn start(zone: &Zone) -> DnsServer {
        assert!(
            Command::new("dnsmasq").arg("--version").output().is_ok(),
            "dnsmasq is missing: apt-get install dnsmasq-base (scripts/test.sh does)"
        );
        let port = free_port();
        let server = DnsServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: tempfile::tempdir().expect("tempdir"),
            child: Mutex::new(None),
        };
        server.set(zone);
        server
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.path().join("zone.conf")
    }

    /// Serves `zone` from now on (dnsmasq reads its records at start: restart on the same port).
    pub fn set(&self, zone: &Zone) {
        std::fs::write(self.conf_path(), zone.conf(&zone.other_domains())).expect("zone file");
        let mut guard = self.child.lock().expect("lock");
        if let Some(mut old) = guard.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        let log = self.dir.path().join("dnsmasq.log");
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--bind-interfaces",
            ])
            .args([
                "--listen-address=127.0.0.1",
                "--pid-file=",
                "--user=root",
                "--cache-size=0",
            ])
            .arg(format!("--port={}", self.addr.port()))
            .arg(format!("--conf-file={}", self.conf_path().display()))
            .arg(format!("--log-facility={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dnsmasq");
        *guard = Some(child);
        drop(guard);
        let t0 = Instant::now();
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_err() {
            if let Some(c) = self.child.lock().expect("lock").as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = c.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    panic!("dnsmasq exited ({status}): {err}");
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "dnsmasq did not start on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops answering (a DNS server that is down).
    pub fn stop(&self) {
        if let Some(mut c) = self.child.lock().expect("lock").take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
