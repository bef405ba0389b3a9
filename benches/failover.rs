//! High availability on a real PostgreSQL: two `postcanary run` daemons
//! with `[ledger] ha` (lease 6 s) probing N sandbox channels every 10 s.
//! Measures the CPU and RSS of the active and the standby over a load
//! window, the ledger's growth per probe (pg_database_size), and the failover
//! time — kill -9 of the active until the other's /healthz says active —
//! over repeated kills (the killed one is restarted as the new standby).
//!
//! Run: `cargo bench --bench failover` (POSTCANARY_BENCH_N: channels,
//! default 50; kills = N / 5, at least 2; load window 60 s, 20 s below N = 50).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::hadaemons::{count, logs, setup, wait_active, Daemon, LEASE};

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
    let kills = (n / 5).max(2);
    let window = if n >= 50 {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(20)
    };
    let s = setup(n, 2, "10s").await;
    let config = s.config.replace("@PGPORT@", &s.pg.port.to_string());
    let pw = s.pg.password.clone();
    let mut ds = vec![
        Daemon::start(s.dir.path(), "d1", &config, &pw),
        Daemon::start(s.dir.path(), "d2", &config, &pw),
    ];
    let active = wait_active(&ds, &[0, 1], Duration::from_secs(30))
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
        "failover bench: {n} channels every 10 s, two instances, lease {}s",
        LEASE.as_secs()
    );
    println!(
        "  load window {secs:.0} s: {probes} probes ({:.1}/s)",
        probes as f64 / secs
    );
    println!(
        "  active:  CPU {:.1} % of a core, RSS {} MiB; {:.2} ms CPU per probe",
        (a1.0 - a0.0) / secs * 100.0,
        a1.1 / 1024,
        cpu_per_probe_ms
    );
    println!(
        "  standby: CPU {:.2} % of a core, RSS {} MiB",
        (s1.0 - s0.0) / secs * 100.0,
        s1.1 / 1024
    );
    println!(
        "  ledger growth: {:.0} bytes per probe (pg_database_size, indexes included)",
        bytes_per_probe
    );
    // 10,000 channels every 5 minutes = 2.88 M probes a day.
    let per_day = 10_000.0 * 288.0;
    println!(
        "  extrapolated to 10,000 channels every 5 min: {:.1} GiB of ledger a day; active CPU {:.0} % of a core",
        bytes_per_probe * per_day / 1024f64.powi(3),
        cpu_per_probe_ms * per_day / 86_400_000.0 * 100.0
    );

    let mut times = Vec::new();
    let mut active = active;
    for k in 0..kills {
        let killed_at = Instant::now();
        ds[active].kill9();
        let other = 1 - active;
        let next = wait_active(&ds, &[other], LEASE + Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("kill {k}: no takeover\n{}", logs(&ds)));
        times.push(killed_at.elapsed().as_secs_f64());
        let name = ds[active].name.clone();
        ds[active] = Daemon::start(s.dir.path(), &name, &config, &pw);
        // Wait for the restarted one to stand by before the next kill.
        let end = Instant::now() + Duration::from_secs(20);
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
