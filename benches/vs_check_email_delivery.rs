//! postcanary against check_email_delivery (Debian's monitoring-plugins-contrib,
//! the classic Nagios round-trip plugin), through the same real Postfix +
//! Dovecot on loopback, in one run: N round trips each (send a tagged mail,
//! find it in the mailbox by IMAP), CPU seconds and wall time per round trip.
//!
//! postcanary runs as the daemon does: one process with its IMAP watcher
//! connected; its CPU is the whole process's (all threads, /proc/self/stat).
//! check_email_delivery is what Nagios runs: a process per check, which
//! starts check_smtp_send and check_imap_receive; its CPU is that of the
//! waited-for children (cutime + cstime).
//!
//! Run: `cargo bench --bench vs_check_email_delivery` (POSTCANARY_BENCH_N
//! round trips each, default 50). Needs check_email_delivery and
//! Mail::IMAPClient (`apt-get install monitoring-plugins-contrib
//! libmail-imapclient-perl`; scripts/test.sh installs them).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use postcanary::config::Config;
use postcanary::engine::Engine;
use postcanary::verdict::Verdict;
use support::mailstack::MailStack;

const PLUGIN: &str = "/usr/lib/nagios/plugins/check_email_delivery";

/// (own CPU, waited-for children's CPU) in seconds, from /proc/self/stat.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    // rest[0] is field 3 (state): utime = field 14, stime 15, cutime 16, cstime 17.
    let tick = 100.0; // USER_HZ on Linux
    let at = |field: usize| f.get(field - 3).copied().unwrap_or(0.0) / tick;
    (at(14) + at(15), at(16) + at(17))
}

fn main() {
    let n: usize = std::env::var("POSTCANARY_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    if !Path::new(PLUGIN).exists() {
        eprintln!("{PLUGIN} is missing: apt-get install monitoring-plugins-contrib libmail-imapclient-perl");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stack = MailStack::start();
    let pw = stack.password("borger");

    // postcanary: the daemon's way, one engine, N probes in a row.
    let (pc_cpu, pc_wall) = rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("borger.pw"), &pw).expect("pw");
        let toml = format!(
            "[ledger]\nurl = \"sqlite://ledger.db\"\n\n[[sender]]\nname = \"relay\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\n\
             port = {}\ntls = \"none\"\nfrom = \"canary@kommune.example\"\n\n[[inbox]]\nname = \"borger\"\nkind = \"imap\"\n\
             host = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"borger\"\npassword = \"file:borger.pw\"\n\
             after_confirm = \"delete\"\n\n[[channel]]\nid = \"borger-mail\"\nname = \"Borger\"\nkind = \"mail\"\n\
             to = \"borger@kommune.example\"\ninbox = \"borger\"\ndeadline = \"1m\"\n",
            stack.smtp_port, stack.imap_port
        );
        std::fs::write(dir.path().join("postcanary.toml"), toml).expect("config");
        let config = Config::load(&dir.path().join("postcanary.toml")).expect("config");
        let engine = Engine::start(config).await.expect("engine");
        assert!(engine.wait_watchers_connected(Duration::from_secs(15)).await);
        let ch = engine.config.channel("borger-mail").expect("channel").clone();
        let (cpu0, _) = cpu_seconds();
        let t0 = Instant::now();
        for _ in 0..n {
            let p = engine.check(std::slice::from_ref(&ch)).await.expect("check").remove(0);
            assert_eq!(p.verdict, Verdict::Delivered, "{p:?}");
        }
        let wall = t0.elapsed().as_secs_f64();
        let (cpu1, _) = cpu_seconds();
        engine.stop().await;
        (cpu1 - cpu0, wall)
    });

    // check_email_delivery: what Nagios runs, one process per round trip.
    let (_, c0) = cpu_seconds();
    let t0 = Instant::now();
    for _ in 0..n {
        let out = Command::new(PLUGIN)
            .args(["--smtp-server", "127.0.0.1", "--smtp-port"])
            .arg(stack.smtp_port.to_string())
            .args(["--nosmtptls", "--mailto", "borger@kommune.example"])
            .args(["--mailfrom", "canary@kommune.example", "--imap-server", "127.0.0.1"])
            .args([
                "--imap-port",
                &stack.imap_port.to_string(),
                "--noimapssl",
                "--noimaptls",
            ])
            .args(["--username", "borger", "--password", &pw])
            .args([
                "--wait",
                "1",
                "--imap-check-interval",
                "1",
                "-w",
                "20",
                "-c",
                "40",
                "--timeout",
                "60",
            ])
            .output()
            .expect("check_email_delivery");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("EMAIL DELIVERY OK"),
            "check_email_delivery: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ced_wall = t0.elapsed().as_secs_f64();
    let (_, c1) = cpu_seconds();
    let ced_cpu = c1 - c0;

    let per = |x: f64| x / n as f64;
    println!("| round trips through Postfix + Dovecot (n = {n} each) | CPU s per round trip | wall s per round trip |");
    println!("|---|---|---|");
    println!(
        "| postcanary (daemon: one process, IMAP IDLE) | {:.4} | {:.3} |",
        per(pc_cpu),
        per(pc_wall)
    );
    println!(
        "| check_email_delivery 0.7.1 (process per check) | {:.4} | {:.3} |",
        per(ced_cpu),
        per(ced_wall)
    );
    if pc_cpu > 0.0 {
        println!(
            "\nCPU ratio check_email_delivery / postcanary: {:.1}×",
            ced_cpu / pc_cpu
        );
    } else {
        println!(
            "\npostcanary used less CPU than one clock tick (10 ms) in all: ratio > {:.0}×",
            ced_cpu / 0.01
        );
    }
}
