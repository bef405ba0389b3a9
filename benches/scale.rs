//! Scale: N channels (10,000 by default; 50,000 for issue 20) on a 5-minute
//! cadence against the sandbox mail servers, for one full cadence plus a
//! margin. Measures the postcanary process only — the sandbox runs in a
//! child process (this binary, re-executed) — for CPU share, peak RSS,
//! scheduler lateness (due time → probe row written), verdict latency
//! (accepted by the relay → `delivered` written), ledger growth per day, the
//! open IMAP connections (sampled every second: one per inbox, however many
//! channels share it) and a `/metrics` scrape (size and time) at the end.
//! It fails if anything was lost: every slot due in the run must have its
//! probe row, and every probe must be judged `delivered` once the run drains.
//!
//! Run: `cargo bench --bench scale` (POSTCANARY_BENCH_N channels, default
//! 10000; POSTCANARY_SCALE_SECS run time, default 330). With fewer than
//! 1,000 channels (the CI smoke run) the cadence is 10 s and the run 25 s.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
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

/// Established TCP connections (on this machine) whose far end is `port` on
/// loopback: postcanary's connections to the sandbox server on that port.
fn connections_to(port: u16) -> usize {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3 && f[2].ends_with(&want) && f[3] == "01"
                })
                .count()
        })
        .sum()
}

fn ms_stats(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "{:.0} / {:.0} / {:.0} ms",
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v[v.len() - 1]
    )
}

/// What one run measured.
struct Run {
    load_secs: f64,
    cpu: f64,
    wall: f64,
    lateness: Vec<f64>,
    verdicts: std::collections::BTreeMap<String, usize>,
    growth_per_day: f64,
    expected: usize,
    lost: usize,
    pending_after_drain: usize,
    verdict_latency: Vec<f64>,
    delivery_latency: Vec<f64>,
    /// Row written → relay accepted.
    send_time: Vec<f64>,
    /// Scheduler lateness by minute of the run (by due time).
    late_by_minute: Vec<Vec<f64>>,
    /// The machine's 1-minute load average, sampled each second.
    load: Vec<f64>,
    reports_lagged: u64,
    imap_max: usize,
    smtp_max: usize,
    watchers: usize,
    scrapes: Vec<(usize, f64)>,
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
        "[ledger]\nurl = \"sqlite://ledger.db\"\n\n[server]\nlisten = \"127.0.0.1:0\"\npublic_metrics = true\n\n\
         [defaults]\nschedule = \"every {cadence}\"\ndeadline = \"2m\"\njitter = \"{cadence}\"\n\n\
         [[sender]]\nname = \"relay\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {smtp}\ntls = \"none\"\n\
         from = \"canary@kommune.example\"\ntimeout = \"30s\"\n\n\
         [[inbox]]\nname = \"social\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {imap}\ntls = \"none\"\n\
         username = \"social\"\npassword = \"file:pw\"\nafter_confirm = \"delete\"\n\n"
    );
    // Owners as a national operator has them: a few hundred, ~100 channels each.
    for i in 0..n {
        toml.push_str(&format!(
            "[[channel]]\nid = \"c{i}\"\nname = \"Channel {i}\"\nowner = \"owner-{}\"\nkind = \"mail\"\n\
             to = \"c{i}@kommune.example\"\ninbox = \"social\"\n\n",
            i / 100
        ));
    }
    std::fs::write(dir.path().join("postcanary.toml"), toml).expect("config");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let r = rt.block_on(async {
        let t_load = Instant::now();
        let config = Config::load(&dir.path().join("postcanary.toml")).expect("config");
        let load_secs = t_load.elapsed().as_secs_f64();
        let interval_ms = config.channels[0].schedule.nominal_interval().as_millis() as i64;
        let mut engine = Engine::start(config).await.expect("engine");
        // The engine's own config (shared, not copied: the process measured holds one channel list).
        let config = std::sync::Arc::clone(&engine.config);
        let addr = postcanary::server::start(&mut engine)
            .await
            .expect("server")
            .expect("[server] is configured");
        assert!(engine.wait_watchers_connected(Duration::from_secs(15)).await);
        let watchers = engine.watcher_states().len();
        let size0 = ledger_bytes(dir.path());

        // Open connections to the sandbox, sampled every second while the scheduler runs.
        let sampling = Arc::new(AtomicBool::new(true));
        let (imap_max, smtp_max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let sampler = {
            let (sampling, imap_max, smtp_max) = (Arc::clone(&sampling), Arc::clone(&imap_max), Arc::clone(&smtp_max));
            std::thread::spawn(move || {
                // The machine's 1-minute load average, each second: other work competes for the cores.
                let mut load = Vec::new();
                while sampling.load(Ordering::Relaxed) {
                    imap_max.fetch_max(connections_to(imap), Ordering::Relaxed);
                    smtp_max.fetch_max(connections_to(smtp), Ordering::Relaxed);
                    if let Some(l) = std::fs::read_to_string("/proc/loadavg")
                        .ok()
                        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse::<f64>().ok()))
                    {
                        load.push(l);
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                load
            })
        };
        // When each verdict was written, as the engine reports it (to the incident processor).
        let mut reports = engine.verdicts.subscribe();
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
        let reported = tokio::spawn(async move {
            let mut at: std::collections::HashMap<String, i64> = Default::default();
            let mut lagged = 0u64;
            loop {
                tokio::select! {
                    r = reports.recv() => match r {
                        Ok(r) => {
                            at.insert(r.probe_id, postcanary::verdict::now_millis());
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => lagged += n,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                    _ = &mut done_rx => break,
                }
            }
            (at, lagged)
        });

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        let started = chrono::Utc::now();
        let run = engine.run_scheduler(stop_rx);
        let timer = async {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let _ = stop_tx.send(true);
        };
        tokio::join!(run, timer);
        let stopped = chrono::Utc::now();
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        sampling.store(false, Ordering::Relaxed);
        let load = sampler.join().unwrap_or_default();

        // Drain: the last probes' mail is still on its way; wait (bounded) until none is pending.
        let store = SqliteStore::open(&dir.path().join("ledger.db")).await.expect("ledger");
        let drain_end = Instant::now() + Duration::from_secs(60);
        let mut pending_after_drain = store.pending().await.expect("pending").len();
        while pending_after_drain > 0 && Instant::now() < drain_end {
            tokio::time::sleep(Duration::from_millis(500)).await;
            pending_after_drain = store.pending().await.expect("pending").len();
        }

        // /metrics at this size: three scrapes, as Prometheus makes them.
        let http = reqwest::Client::new();
        let mut scrapes = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let body = http
                .get(format!("http://{addr}/metrics"))
                .send()
                .await
                .expect("scrape")
                .text()
                .await
                .expect("scrape body");
            scrapes.push((body.len(), t.elapsed().as_secs_f64() * 1000.0));
            assert!(
                body.contains("postcanary_channel_up"),
                "a scrape without channel states"
            );
        }
        let _ = done_tx.send(());
        let (reported_at, reports_lagged) = reported.await.expect("verdict reports");
        engine.stop().await;
        let growth = ledger_bytes(dir.path()).saturating_sub(size0) as f64;

        // Every slot due in the run (up to a second before the stop, for the
        // last firing's write) has its probe row.
        let channels = &config.channels;
        let offsets: std::collections::HashMap<&str, i64> = channels
            .iter()
            .map(|c| (c.id.as_str(), c.jitter_offset.as_millis() as i64))
            .collect();
        let stop_at = stopped - chrono::Duration::seconds(1);
        let mut expected_of: std::collections::HashMap<&str, usize> = Default::default();
        for ch in channels.iter() {
            let mut t = ch.schedule.next_after(started, ch.jitter_offset);
            while let Some(due) = t.filter(|t| *t < stop_at) {
                *expected_of.entry(ch.id.as_str()).or_default() += 1;
                t = ch.schedule.next_after(due, ch.jitter_offset);
            }
        }
        let db = rusqlite::Connection::open(dir.path().join("ledger.db")).expect("ledger");
        let mut made_of: std::collections::HashMap<String, usize> = Default::default();
        let mut verdicts: std::collections::BTreeMap<String, usize> = Default::default();
        let mut lateness = Vec::new();
        let mut verdict_latency = Vec::new();
        let mut delivery_latency = Vec::new();
        let mut send_time = Vec::new();
        let mut late_by_minute: Vec<Vec<f64>> = Vec::new();
        let run_start = started.timestamp_millis();
        {
            let mut stmt = db
                .prepare("SELECT channel, verdict, created_at, sent_at, judged_at, latency_ms, id FROM probes")
                .expect("query");
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                        r.get::<_, String>(6)?,
                    ))
                })
                .expect("rows");
            for row in rows {
                let (channel, verdict, created, sent, _judged, latency, id) = row.expect("row");
                let off = offsets.get(channel.as_str()).copied().unwrap_or(0);
                let late = (created - off).rem_euclid(interval_ms);
                lateness.push(late as f64);
                let minute = usize::try_from((created - late - run_start) / 60_000).unwrap_or(0);
                if late_by_minute.len() <= minute {
                    late_by_minute.resize(minute + 1, Vec::new());
                }
                late_by_minute[minute].push(late as f64);
                if let Some(s) = sent {
                    send_time.push((s - created) as f64);
                }
                if verdict == "delivered" {
                    if let (Some(s), Some(w)) = (sent, reported_at.get(&id)) {
                        verdict_latency.push((w - s) as f64);
                    }
                    if let Some(l) = latency {
                        delivery_latency.push(l as f64);
                    }
                }
                *verdicts.entry(verdict).or_default() += 1;
                *made_of.entry(channel).or_default() += 1;
            }
        }
        let expected: usize = expected_of.values().sum();
        let lost: usize = expected_of
            .iter()
            .map(|(ch, e)| e.saturating_sub(made_of.get(*ch).copied().unwrap_or(0)))
            .sum();
        // Bytes per probe, times the probes a day brings at this cadence.
        let per_day = n as f64 * 86_400_000.0 / interval_ms as f64;
        let per_probe = if lateness.is_empty() {
            0.0
        } else {
            growth / lateness.len() as f64
        };
        Run {
            load_secs,
            cpu,
            wall,
            lateness,
            verdicts,
            growth_per_day: per_probe * per_day,
            expected,
            lost,
            pending_after_drain,
            verdict_latency,
            delivery_latency,
            send_time,
            late_by_minute,
            load,
            reports_lagged,
            imap_max: imap_max.load(Ordering::Relaxed),
            smtp_max: smtp_max.load(Ordering::Relaxed),
            watchers,
            scrapes,
        }
    });
    drop(child.stdin.take());
    let _ = child.wait();

    let probes = r.lateness.len();
    println!("| scale: {n} channels every {cadence}, {secs} s run | value |");
    println!("|---|---|");
    println!("| config load ({n} channels) | {:.2} s |", r.load_secs);
    println!("| probes made in the run | {probes} ({:?}) |", r.verdicts);
    println!(
        "| slots due in the run / without a probe / pending after drain | {} / {} / {} |",
        r.expected, r.lost, r.pending_after_drain
    );
    println!(
        "| CPU share of one core (postcanary process) | {:.1}% |",
        r.cpu / r.wall * 100.0
    );
    println!("| peak RSS (postcanary process) | {:.1} MiB |", peak_rss_mib());
    println!("| scheduler lateness p50 / p99 / max | {} |", ms_stats(r.lateness));
    let by_minute: Vec<String> = r
        .late_by_minute
        .into_iter()
        .map(|mut v| {
            v.sort_by(|a, b| a.total_cmp(b));
            if v.is_empty() {
                "-".into()
            } else {
                format!("{:.0}", percentile(&v, 0.99))
            }
        })
        .collect();
    println!(
        "| scheduler lateness p99 by minute of the run | {} ms |",
        by_minute.join(" / ")
    );
    println!(
        "| send time (row written → relay accepted) p50 / p99 / max | {} |",
        ms_stats(r.send_time)
    );
    println!(
        "| verdict latency (relay accepted → delivered verdict written) p50 / p99 / max | {}{} |",
        ms_stats(r.verdict_latency),
        if r.reports_lagged > 0 {
            format!(" ({} reports not seen)", r.reports_lagged)
        } else {
            String::new()
        }
    );
    let (load_mean, load_max) = if r.load.is_empty() {
        (0.0, 0.0)
    } else {
        (
            r.load.iter().sum::<f64>() / r.load.len() as f64,
            r.load.iter().copied().fold(0.0, f64::max),
        )
    };
    println!("| machine load average during the run (mean / max; 2 cores) | {load_mean:.1} / {load_max:.1} |");
    println!(
        "| delivery latency (hand-over → token seen) p50 / p99 / max | {} |",
        ms_stats(r.delivery_latency)
    );
    println!(
        "| open IMAP connections, most at once (watchers) | {} ({}) |",
        r.imap_max, r.watchers
    );
    println!("| open SMTP connections, most at once | {} |", r.smtp_max);
    println!(
        "| ledger growth, extrapolated per day | {:.1} MiB |",
        r.growth_per_day / 1_048_576.0
    );
    let mut ms: Vec<f64> = r.scrapes.iter().map(|s| s.1).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let size = r.scrapes.last().map(|s| s.0).unwrap_or(0);
    println!(
        "| /metrics scrape: size / time (median of {}) | {:.1} KiB / {:.0} ms |",
        ms.len(),
        size as f64 / 1024.0,
        percentile(&ms, 0.5)
    );
    // Nothing lost: every due slot has its probe, every probe its verdict,
    // and the inbox is read over one connection per watcher.
    assert_eq!(r.lost, 0, "slots due in the run without a probe");
    assert_eq!(r.pending_after_drain, 0, "probes still pending a minute after the run");
    assert_eq!(
        r.verdicts.get("delivered").copied().unwrap_or(0),
        probes,
        "every probe delivered: {:?}",
        r.verdicts
    );
    assert!(
        r.imap_max <= r.watchers,
        "{} IMAP connections for {} watchers",
        r.imap_max,
        r.watchers
    );
}
