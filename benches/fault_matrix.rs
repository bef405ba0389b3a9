//! Fault matrix: faults of postcanary's own side × number of channels →
//! channel pages, "postcanary degraded" pages, and the verdicts. The real
//! engine against the in-process sandbox (mail keeps being delivered while
//! the fault lasts), every channel probed once with a 5 s deadline, pages
//! to a local webhook receiver. A trustworthy canary shows 0 channel pages
//! in every row.
//!
//! Run: `cargo bench --bench fault_matrix` (POSTCANARY_BENCH_N: the largest
//! channel count, default 200; rows for 50 and N).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::sandboxrig::{fire, pages, rig, wait_final};

#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// IMAP logins refused for 8 s, then accepted again.
    ImapRefused8s,
    /// IMAP logins refused for good (blind grace 3 s).
    ImapRefusedPastGrace,
    /// IDLE advertised but never pushing; the poll interval is 60 s.
    SilentIdle,
    /// The relay is down (nothing listens on its port).
    RelayDown,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::ImapRefused8s => "IMAP login refused 8 s",
            Fault::ImapRefusedPastGrace => "IMAP login refused past grace (3 s)",
            Fault::SilentIdle => "IDLE that never pushes",
            Fault::RelayDown => "relay down",
        }
    }
}

async fn row(fault: Fault, channels: usize) -> String {
    let grace = match fault {
        Fault::ImapRefusedPastGrace => "3s",
        _ => "5m",
    };
    let dead_relay = match fault {
        Fault::RelayDown => std::net::TcpListener::bind("127.0.0.1:0")
            .ok()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port()),
        _ => None,
    };
    let r = rig(channels, "5s", grace, dead_relay).await;
    let faults = r.sandbox.imap().faults();
    match fault {
        Fault::ImapRefused8s | Fault::ImapRefusedPastGrace => {
            faults.refuse_logins(true);
            r.sandbox.imap().drop_connections();
        }
        Fault::SilentIdle => faults.silent_idle(true),
        Fault::None | Fault::RelayDown => {}
    }
    let ids = fire(&r).await;
    if let Fault::ImapRefused8s = fault {
        tokio::time::sleep(Duration::from_secs(8)).await;
        faults.refuse_logins(false);
    }
    let verdicts = wait_final(&r, &ids, Duration::from_secs(60)).await;
    // Give the incident processor and the outbox time to page.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = pages(&r.hook);
    let channel_pages = p.iter().filter(|(_, ch)| ch != "postcanary").count();
    let degraded = p.iter().filter(|(e, ch)| e == "trigger" && ch == "postcanary").count();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for v in verdicts {
        *counts.entry(v.to_string()).or_default() += 1;
    }
    let verdicts: Vec<String> = counts.iter().map(|(v, n)| format!("{n} {v}")).collect();
    r.engine.stop().await;
    format!(
        "| {} | {channels} | {channel_pages} | {degraded} | {} |",
        fault.name(),
        verdicts.join(", ")
    )
}

fn main() {
    let n: usize = std::env::var("POSTCANARY_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let sizes: Vec<usize> = if n <= 50 { vec![n] } else { vec![50, n] };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("| fault | channels | channel pages | degraded pages | verdicts |");
    println!("|---|---|---|---|---|");
    let mut bad = false;
    for fault in [
        Fault::None,
        Fault::ImapRefused8s,
        Fault::ImapRefusedPastGrace,
        Fault::SilentIdle,
        Fault::RelayDown,
    ] {
        for &channels in &sizes {
            let line = rt.block_on(row(fault, channels));
            bad |= !line.contains(&format!("| {channels} | 0 |"));
            println!("{line}");
        }
    }
    if bad {
        eprintln!("a fault of postcanary's own side paged a channel");
        std::process::exit(1);
    }
}
