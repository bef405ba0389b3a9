//! Scale: N channels (10,000 by default) on a 5-minute cadence against the
//! sandbox mail servers, for one full cadence plus a margin. Measures the
//! postcanary process only — the sandbox runs in a child process (this
//! binary, re-executed) — for CPU share, peak RSS, scheduler lateness
//! (due time → probe row written) and ledger growth per day.
//!
//! Run: `cargo bench --bench scale` (POSTCANARY_BENCH_N channels, default
//! 10000; POSTCANARY_SCALE_SECS run time, default 330). With fewer than
//! 1,000 channels (the CI smoke run) the cadence is 10 s and the run 25 s.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use postcanary::config::Config;
use postcanary::engine::Engine;
use postcanary::ledger::{sqlite::SqliteStore, Store};
use postcanary::sandbox::{MailStore, Route, Sandbox, SandboxOptions, SmtpOptions};
use support::canary::percentile;

const ROLE: &str = "POSTCANARY_SCALE_ROLE";

/// The sandbox side: start the servers, print their ports, run until stdin closes.
fn sandbox_main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = MailStore::new();
        store.add_user("social", "scale");
        store.set_default_route(Route::deliver("social", "INBOX"));
        let options = SandboxOptions {
            smtp: SmtpOptions {
                max_sessions: 512,
                ..SmtpOptions::default()
            },
            ..SandboxOptions::default()
        };
        let sandbox = Sandbox::start(store, options).await.expect("sandbox");
        println!("{} {}", sandbox.smtp_addr().port(), sandbox.imap_addr().port());
        let _ = std::io::stdout().flush();
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await;
        sandbox.shutdown().await;
    });
}

/// (utime + stime) seconds of this process.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// Peak resident set size of this process, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// The ledger's size with its WAL folded in (a checkpoint first), in bytes.
fn ledger_bytes(dir: &std::path::Path) -> u64 {
    if let Ok(c) = rusqlite::Connection::open(dir.join("ledger.db")) {
        let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }
    std::fs::metadata(dir.join("ledger.db")).map(|m| m.len()).unwrap_or(0)
}

fn main() {
    if std::env::var(ROLE).as_deref() == Ok("sandbox") {
        sandbox_main();
        return;
    }
    let n: usize = std::env::var("POSTCANARY_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let small = n < 1_000;
    let (cadence, default_secs) = if small { ("10s", 25) } else { ("5m", 330) };
    let secs: u64 = std::env::var("POSTCANARY_SCALE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_secs);

    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env(ROLE, "sandbox")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the sandbox process");
    let mut ports = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut ports)
        .expect("sandbox ports");
    let mut it = ports.split_whitespace().filter_map(|p| p.parse::<u16>().ok());
    let (smtp, imap) = (it.next().expect("smtp port"), it.next().expect("imap port"));

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pw"), "scale").expect("pw");
    let mut toml = format!(
        "[ledger]\nurl = \"sqlite://ledger.db\"\n\n[defaults]\nschedule = \"every {cadence}\"\ndeadline = \"2m\"\njitter = \"{cadence}\"\n\n\
         [[sender]]\nname = \"relay\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {smtp}\ntls = \"none\"\n\
         from = \"canary@kommune.example\"\ntimeout = \"30s\"\n\n\
         [[inbox]]\nname = \"social\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {imap}\ntls = \"none\"\n\
         username = \"social\"\npassword = \"file:pw\"\nafter_confirm = \"delete\"\n\n"
    );
    for i in 0..n {
        toml.push_str(&format!(
            "[[channel]]\nid = \"c{i}\"\nname = \"Channel {i}\"\nkind = \"mail\"\nto = \"c{i}@kommune.example\"\ninbox = \"social\"\n\n"
        ));
    }
    std::fs::write(dir.path().join("postcanary.toml"), toml).expect("config");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (cpu, wall, lateness, verdicts, growth_per_day) = rt.block_on(async {
        let config = Config::load(&dir.path().join("postcanary.toml")).expect("config");
        let offsets: std::collections::HashMap<String, i64> = config
            .channels
            .iter()
            .map(|c| (c.id.clone(), c.jitter_offset.as_millis() as i64))
            .collect();
        let interval_ms = config.channels[0].schedule.nominal_interval().as_millis() as i64;
        let engine = Engine::start(config).await.expect("engine");
        assert!(engine.wait_watchers_connected(Duration::from_secs(15)).await);
        let size0 = ledger_bytes(dir.path());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        let run = engine.run_scheduler(stop_rx);
        let timer = async {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let _ = stop_tx.send(true);
        };
        tokio::join!(run, timer);
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        engine.stop().await;
        let growth = ledger_bytes(dir.path()).saturating_sub(size0) as f64;
        let store = SqliteStore::open(&dir.path().join("ledger.db")).await.expect("ledger");
        let statuses = store
            .channel_status(
                &offsets.keys().cloned().collect::<Vec<_>>(),
                postcanary::verdict::now_millis(),
                100,
            )
            .await
            .expect("status");
        let mut lateness = Vec::new();
        let mut verdicts: std::collections::BTreeMap<String, usize> = Default::default();
        for s in &statuses {
            for p in &s.recent {
                *verdicts.entry(p.verdict.to_string()).or_default() += 1;
            }
        }
        for p in store.pending().await.expect("pending") {
            *verdicts.entry("pending".into()).or_default() += 1;
            let off = offsets.get(&p.channel).copied().unwrap_or(0);
            lateness.push(((p.created_at - off).rem_euclid(interval_ms)) as f64);
        }
        for s in &statuses {
            let off = offsets.get(&s.channel).copied().unwrap_or(0);
            for p in &s.recent {
                lateness.push(((p.created_at - off).rem_euclid(interval_ms)) as f64);
            }
        }
        // Bytes per probe, times the probes a day brings at this cadence.
        let per_day = n as f64 * 86_400_000.0 / interval_ms as f64;
        let per_probe = if lateness.is_empty() {
            0.0
        } else {
            growth / lateness.len() as f64
        };
        (cpu, wall, lateness, verdicts, per_probe * per_day)
    });
    drop(child.stdin.take());
    let _ = child.wait();

    let mut l = lateness;
    l.sort_by(|a, b| a.total_cmp(b));
    let probes = l.len();
    println!("| scale: {n} channels every {cadence}, {secs} s run | value |");
    println!("|---|---|");
    println!("| probes made in the run | {probes} ({verdicts:?}) |");
    println!(
        "| CPU share of one core (postcanary process) | {:.1}% |",
        cpu / wall * 100.0
    );
    println!("| peak RSS (postcanary process) | {:.1} MiB |", peak_rss_mib());
    if probes > 0 {
        println!(
            "| scheduler lateness p50 / p99 / max | {:.0} / {:.0} / {:.0} ms |",
            percentile(&l, 0.5),
            percentile(&l, 0.99),
            l[probes - 1]
        );
    }
    println!(
        "| ledger growth, extrapolated per day | {:.1} MiB |",
        growth_per_day / 1_048_576.0
    );
}
