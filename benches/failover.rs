//! High availability on a real PostgreSQL: two `postcanary run` daemons
//! with `[ledger] ha` (lease 6 s) probing N sandbox channels. Measures the
//! CPU and RSS of the active and the standby over a load window, the
//! ledger's growth (pg_database_size) per probe and per day, and the
//! failover time — kill -9 of the active until the other's /healthz says
//! active — over repeated kills (the killed one is restarted as the new
//! standby).
//!
//! Run: `cargo bench --bench failover`. POSTCANARY_BENCH_N: channels
//! (default 50). Below 1,000 channels they are probed every 10 s (load
//! window 60 s, 20 s below N = 50); from 1,000 on every 5 min, spread over
//! the interval, deadline 2 min, inbox `after_confirm = "delete"`, load
//! window POSTCANARY_FAILOVER_SECS (default 330: a full cadence and a half
//! minute). POSTCANARY_BENCH_KILLS: kills (default N / 5, from 2 to 10).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::hadaemons::{count, logs, setup_with, wait_active, Daemon, Shape, LEASE};

/// (CPU seconds, RSS KiB) of a process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (ticks(11) + ticks(12)) / hz.max(1.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu, rss)
}

/// Peak RSS (VmHWM, KiB) of a process.
fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn pid(d: &Daemon) -> u32 {
    d.child.as_ref().map(|c| c.id()).unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("POSTCANARY_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let kills = env("POSTCANARY_BENCH_KILLS").map_or((n / 5).clamp(2, 10), |k| k as usize);
    let large = n >= 1_000;
    let window = if large {
        Duration::from_secs(env("POSTCANARY_FAILOVER_SECS").unwrap_or(330))
    } else if n >= 50 {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(20)
    };
    let shape = if large {
        Shape {
            every: "5m",
            jitter: "5m",
            deadline: "2m",
            after_confirm: Some("delete"),
            smtp_sessions: 512,
        }
    } else {
        Shape {
            every: "10s",
            jitter: "1s",
            deadline: "5s",
            after_confirm: None,
            smtp_sessions: 32,
        }
    };
    // How long a start (a 10,000-channel config, the engine) may take.
    let slack = if large {
        Duration::from_secs(90)
    } else {
        Duration::from_secs(15)
    };
    let interval_s: f64 = if large { 300.0 } else { 10.0 };
    let s = setup_with(n, 2, &shape).await;
    let config = s.config.replace("@PGPORT@", &s.pg.port.to_string());
    let pw = s.pg.password.clone();
    let mut ds = vec![
        Daemon::start(s.dir.path(), "d1", &config, &pw),
        Daemon::start(s.dir.path(), "d2", &config, &pw),
    ];
    let active = wait_active(&ds, &[0, 1], Duration::from_secs(30) + slack)
        .await
        .unwrap_or_else(|| panic!("no instance became active\n{}", logs(&ds)));
    let standby = 1 - active;
    // Let the active settle (watchers connected, first round sent).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let size = |s: &support::postgres::Postgres| count(s, "SELECT pg_database_size('postcanary')");
    let (db0, probes0) = (size(&s.pg), count(&s.pg, "SELECT count(*) FROM probes"));
    let (a0, s0) = (usage(pid(&ds[active])), usage(pid(&ds[standby])));
    tokio::time::sleep(window).await;
    let (a1, s1) = (usage(pid(&ds[active])), usage(pid(&ds[standby])));
    let (db1, probes1) = (size(&s.pg), count(&s.pg, "SELECT count(*) FROM probes"));
    let secs = window.as_secs_f64();
    let probes = (probes1 - probes0).max(1);
    let bytes_per_probe = (db1 - db0) as f64 / probes as f64;
    let cpu_per_probe_ms = (a1.0 - a0.0) * 1000.0 / probes as f64;
    println!(
        "failover bench: {n} channels every {} s, two instances, lease {}s",
        interval_s,
        LEASE.as_secs()
    );
    println!(
        "  load window {secs:.0} s: {probes} probes ({:.1}/s)",
        probes as f64 / secs
    );
    println!(
        "  active:  CPU {:.1} % of a core, RSS {} MiB (peak {} MiB); {:.2} ms CPU per probe",
        (a1.0 - a0.0) / secs * 100.0,
        a1.1 / 1024,
        peak_rss(pid(&ds[active])) / 1024,
        cpu_per_probe_ms
    );
    println!(
        "  standby: CPU {:.2} % of a core, RSS {} MiB (peak {} MiB)",
        (s1.0 - s0.0) / secs * 100.0,
        s1.1 / 1024,
        peak_rss(pid(&ds[standby])) / 1024
    );
    println!(
        "  ledger growth: {:.0} bytes per probe (pg_database_size, indexes included); \
         {:.2} GiB a day at this load ({:.0} probes a day)",
        bytes_per_probe,
        bytes_per_probe * n as f64 * 86_400.0 / interval_s / 1024f64.powi(3),
        n as f64 * 86_400.0 / interval_s
    );
    if !large {
        // 10,000 channels every 5 minutes = 2.88 M probes a day.
        let per_day = 10_000.0 * 288.0;
        println!(
            "  extrapolated to 10,000 channels every 5 min: {:.1} GiB of ledger a day; active CPU {:.0} % of a core",
            bytes_per_probe * per_day / 1024f64.powi(3),
            cpu_per_probe_ms * per_day / 86_400_000.0 * 100.0
        );
    }

    let mut times = Vec::new();
    let mut active = active;
    for k in 0..kills {
        let killed_at = Instant::now();
        ds[active].kill9();
        let other = 1 - active;
        let next = wait_active(&ds, &[other], LEASE + slack)
            .await
            .unwrap_or_else(|| panic!("kill {k}: no takeover\n{}", logs(&ds)));
        times.push(killed_at.elapsed().as_secs_f64());
        let name = ds[active].name.clone();
        ds[active] = Daemon::start(s.dir.path(), &name, &config, &pw);
        // Wait for the restarted one to stand by before the next kill.
        let end = Instant::now() + Duration::from_secs(5) + slack;
        while ds[active].role().await != "standby" {
            assert!(
                Instant::now() < end,
                "restarted {name} does not stand by\n{}",
                logs(&ds)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        active = next;
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "  failover (kill -9 → the standby's /healthz says active) over {kills} kills: p50 {:.2} s, max {:.2} s",
        percentile(&sorted, 0.5),
        sorted.last().copied().unwrap_or(0.0)
    );
    let pending_old = count(
        &s.pg,
        "SELECT count(*) FROM probes WHERE verdict = 'pending' AND deadline < (extract(epoch from now()) * 1000)::bigint - 60000",
    );
    println!("  probes still pending a minute past their deadline: {pending_old}");
    let doubled = s.pg.psql_on(
        "postcanary",
        "SELECT count(*) FROM (SELECT probe_id FROM probe_events WHERE kind = 'verdict' GROUP BY probe_id HAVING count(*) > 1) t",
    );
    println!("  probes judged twice: {doubled}");
    for d in &mut ds {
        d.kill9();
    }
}
