//! The verdicts that catch the seed failures, against the real Postfix +
//! Dovecot: a bounce after acceptance ends a probe at once, a must-bounce
//! address bounces by DSN, a message filed in Junk is `junked`, and a routing
//! change made mid-run (Postfix map edited and reloaded) is caught by the next
//! scheduled probe.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use postcanary::config::Config;
use postcanary::engine::Engine;
use postcanary::ledger::ProbeRecord;
use postcanary::verdict::Verdict;
use support::mailstack::MailStack;

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

/// Inboxes: social (with its Junk folder watched), closed, and canary — the
/// relay's return-path mailbox, where bounces arrive.
fn setup(stack: &MailStack, channels: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut toml = format!(
        "[ledger]\nurl = \"sqlite://{}\"\n\n[defaults]\nschedule = \"every 1h\"\ndeadline = \"30s\"\n\n\
         [[sender]]\nname = \"relay\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         from = \"Postcanary <canary@kommune.example>\"\ntimeout = \"10s\"\n\n",
        dir.path().join("ledger.db").display(),
        stack.smtp_port,
    );
    for (name, extra) in [("social", "junk = \"Junk\"\n"), ("closed", ""), ("canary", "")] {
        let pw = dir.path().join(format!("{name}.pw"));
        std::fs::write(&pw, stack.password(name)).expect("pw");
        toml.push_str(&format!(
            "[[inbox]]\nname = \"{name}\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             username = \"{name}\"\npassword = \"file:{name}.pw\"\n{extra}\n",
            stack.imap_port
        ));
    }
    toml.push_str(channels);
    let config = dir.path().join("postcanary.toml");
    std::fs::write(&config, toml).expect("config");
    Setup { _dir: dir, config }
}

fn channel(id: &str, to: &str, extra: &str) -> String {
    format!("[[channel]]\nid = \"{id}\"\nname = \"{id}\"\nkind = \"mail\"\nto = \"{to}\"\nvia = \"relay\"\n{extra}\n\n")
}

async fn start(s: &Setup) -> Engine {
    let config = Config::load(&s.config).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::start(config).await.expect("engine");
    assert!(
        engine.wait_watchers_connected(Duration::from_secs(15)).await,
        "{:?}",
        engine.watcher_states()
    );
    engine
}

async fn check(engine: &Engine, id: &str) -> ProbeRecord {
    let ch = engine.config.channel(id).expect("channel").clone();
    engine.check(&[ch]).await.expect("check").remove(0)
}

/// A next hop that refuses every recipient, as a mailbox server behind the
/// gateway does for a deleted mailbox.
async fn rejecting_next_hop() -> u16 {
    support::canary::scripted_smtp(
        "exchange.kommune.example",
        "550 5.1.1 RESOLVER.ADR.RecipNotFound; mailbox retired by IT",
    )
    .await
}

/// `gone@` is accepted by the gateway (it is in the mailbox map) and relayed
/// to a next hop that refuses it: Postfix bounces it to canary@.
async fn retire_after_acceptance(stack: &MailStack) {
    let port = rejecting_next_hop().await;
    let vmailbox = std::fs::read_to_string(stack.dir.path().join("postfix/vmailbox")).expect("vmailbox");
    std::fs::write(
        stack.dir.path().join("postfix/vmailbox"),
        format!("{vmailbox}gone@kommune.example OK\n"),
    )
    .expect("vmailbox");
    stack.set_map(
        "transport",
        &format!("retired@kommune.example discard:\ngone@kommune.example smtp:[127.0.0.1]:{port}\n"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_after_acceptance_ends_the_probe_at_once() {
    let stack = MailStack::start();
    retire_after_acceptance(&stack).await;
    let s = setup(
        &stack,
        &format!(
            "{}{}",
            channel(
                "gone-deliver",
                "gone@kommune.example",
                "inbox = \"social\"\ndeadline = \"60s\""
            ),
            channel(
                "gone-bounce",
                "gone@kommune.example",
                "expect = \"bounce\"\ndeadline = \"60s\""
            ),
        ),
    );
    let engine = start(&s).await;
    let t0 = Instant::now();
    let p = check(&engine, "gone-deliver").await;
    let took = t0.elapsed();
    assert_eq!(p.verdict, Verdict::Bounced, "{p:?}\n{}", stack.log_tail());
    let d = p.detail.clone().unwrap_or_default();
    assert!(d.contains("5.1.1") && d.contains("mailbox retired by IT"), "{d}");
    assert!(
        p.smtp_reply.as_deref().unwrap_or("").contains("queued as"),
        "accepted first: {p:?}"
    );
    assert!(
        took < Duration::from_secs(20),
        "a bounce must not wait for the 60 s deadline: {took:?}"
    );
    // The same address under expect = "bounce": the DSN is the expected outcome.
    let p = check(&engine, "gone-bounce").await;
    assert_eq!(p.verdict, Verdict::ExpectedBounce, "{p:?}");
    assert!(p.detail.unwrap_or_default().starts_with("bounced as expected: "));
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_filed_in_junk_is_junked_and_black_holes_and_unknown_users_are_told_apart() {
    let stack = MailStack::start();
    let s = setup(
        &stack,
        &format!(
            "{}{}{}",
            channel("spam-filtered", "spamfiltered@kommune.example", "inbox = \"social\""),
            channel(
                "retired",
                "retired@kommune.example",
                "expect = \"bounce\"\ndeadline = \"4s\""
            ),
            channel("lookalike", "sikkerepost@kommune.example", "expect = \"bounce\""),
        ),
    );
    let engine = start(&s).await;
    let p = check(&engine, "spam-filtered").await;
    assert_eq!(p.verdict, Verdict::Junked, "{p:?}\n{}", stack.log_tail());
    assert!(
        p.detail.unwrap_or_default().contains("junk folder `Junk` of `social`"),
        "names the folder"
    );
    let p = check(&engine, "retired").await;
    assert_eq!(p.verdict, Verdict::Missed, "{p:?}");
    assert!(p.detail.unwrap_or_default().contains("black hole"));
    let p = check(&engine, "lookalike").await;
    assert_eq!(p.verdict, Verdict::ExpectedBounce, "{p:?}");
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routing_change_mid_run_is_caught_within_one_interval_and_deadline() {
    let stack = MailStack::start();
    let s = setup(
        &stack,
        &channel(
            "familie",
            "familie@kommune.example",
            "inbox = \"closed\"\nschedule = \"every 3s\"\ndeadline = \"4s\"",
        ),
    );
    let engine = start(&s).await;
    let mut reports = engine.verdicts.subscribe();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    async fn next(
        reports: &mut tokio::sync::broadcast::Receiver<postcanary::verdict::VerdictReport>,
    ) -> Result<postcanary::verdict::VerdictReport, tokio::time::error::Elapsed> {
        let fut = async {
            loop {
                match reports.recv().await {
                    Ok(r) if r.channel == "familie" => return r,
                    Ok(_) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), fut).await
    }
    let story = async {
        let first = next(&mut reports).await.expect("a first verdict");
        assert_eq!(first.verdict, Verdict::Delivered, "{first:?}");
        // The vendor points the alias back at the shared mailbox.
        let changed_at = Instant::now();
        stack.set_map("virtual", "familie@kommune.example social@kommune.example\n");
        let caught = loop {
            let r = next(&mut reports).await.expect("a verdict after the change");
            if r.verdict != Verdict::Delivered {
                break r;
            }
        };
        let _ = stop_tx.send(true);
        (caught, changed_at.elapsed())
    };
    // The scheduler runs beside the story and stops when it is told.
    let ((), (caught, after)) = tokio::join!(engine.run_scheduler(stop_rx), story);
    assert_eq!(caught.verdict, Verdict::Misrouted, "{caught:?}");
    assert!(caught.detail.contains("found in `social`"), "{caught:?}");
    // One schedule interval (3 s) + jitter + the deadline (4 s), with room for a loaded CI machine.
    assert!(after < Duration::from_secs(15), "caught after {after:?}");
    engine.stop().await;
}
