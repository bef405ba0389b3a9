//! Our own blind spots never page a channel: the real engine (scheduler off,
//! probes fired by hand) against the in-process sandbox, whose IMAP server
//! can refuse logins, drop connections and advertise an IDLE that never
//! pushes; pages go to a local webhook receiver. The same cases against real
//! servers (Postfix + Dovecot, a second IMAP server) are in trust_e2e.rs.

mod support;

use std::time::Duration;

use postcanary::sandbox::Route;
use postcanary::verdict::Verdict;
use support::sandboxrig::{fire, pages, rig, verdicts, wait_final};

const CHANNELS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_blind_past_every_deadline_pages_no_channel_and_all_arrive() {
    let r = rig(CHANNELS, "4s", "5m", None).await;
    // The IMAP server refuses the watcher; mail keeps being delivered.
    r.sandbox.imap().faults().refuse_logins(true);
    r.sandbox.imap().drop_connections();
    let ids = fire(&r).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        verdicts(&r, &ids).await.iter().all(|v| *v == Verdict::Pending),
        "no verdict while the inbox is not watched"
    );
    r.sandbox.imap().faults().refuse_logins(false);
    let v = wait_final(&r, &ids, Duration::from_secs(30)).await;
    assert!(v.iter().all(|v| *v == Verdict::Delivered), "{v:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let p = pages(&r.hook);
    assert!(p.iter().all(|(_, ch)| ch == "postcanary"), "no channel page: {p:?}");
    assert!(p.iter().filter(|(e, _)| e == "trigger").count() <= 1, "{p:?}");
    r.engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_blind_past_its_grace_is_one_degraded_page() {
    // A 3 s deadline and a 2 s grace: every probe is `error` 5 s after it was sent.
    let r = rig(CHANNELS, "3s", "2s", None).await;
    r.sandbox.imap().faults().refuse_logins(true);
    r.sandbox.imap().drop_connections();
    let ids = fire(&r).await;
    let v = wait_final(&r, &ids, Duration::from_secs(20)).await;
    assert!(v.iter().all(|v| *v == Verdict::Error), "{v:?}");
    let p = r.engine.store.probe(&ids[0]).await.expect("ledger").expect("probe");
    let detail = p.detail.unwrap_or_default();
    assert!(detail.contains("inbox `social` was not watched"), "{detail}");
    assert_eq!(p.fault.as_deref(), Some("inbox:social"));
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while pages(&r.hook).is_empty() && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let p = pages(&r.hook);
    assert_eq!(
        p,
        vec![("trigger".to_string(), "postcanary".to_string())],
        "one degraded page"
    );
    // The watcher comes back; the next delivery through it resolves the incident.
    r.sandbox.imap().faults().refuse_logins(false);
    assert!(r.engine.wait_watchers_connected(Duration::from_secs(15)).await);
    let ch = r.engine.config.channels[0].clone();
    let s = postcanary::probe::run(&r.engine.probe_context(), &r.engine.config, &ch)
        .await
        .expect("probe");
    let v = wait_final(&r, &[s.id], Duration::from_secs(20)).await;
    assert_eq!(v, vec![Verdict::Delivered]);
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while pages(&r.hook).len() < 2 && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        pages(&r.hook),
        vec![
            ("trigger".to_string(), "postcanary".to_string()),
            ("resolve".to_string(), "postcanary".to_string())
        ]
    );
    r.engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_that_never_pushes_still_gives_deliveries_before_a_short_deadline() {
    let r = rig(CHANNELS, "3s", "5m", None).await;
    // IDLE advertised, never announcing anything; the watcher's poll is 60 s.
    r.sandbox.imap().faults().silent_idle(true);
    let ids = fire(&r).await;
    let v = wait_final(&r, &ids, Duration::from_secs(20)).await;
    assert!(v.iter().all(|v| *v == Verdict::Delivered), "{v:?}");
    assert!(pages(&r.hook).is_empty(), "{:?}", pages(&r.hook));
    r.engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_as_shown_never_count_and_are_never_shown_whole() {
    let r = rig(CHANNELS, "3s", "5m", None).await;
    // The channel's mail goes nowhere; a copy of what the ledger shows is mailed in.
    r.sandbox.store().set_route("ch0@sandbox.test", Route::Discard);
    let ids = fire(&r).await;
    let p = r.engine.store.probe(&ids[0]).await.expect("ledger").expect("probe");
    assert_eq!(p.token.len(), 29, "the ledger keeps pc-<ULID>, no tag: {}", p.token);
    let copy = format!("Subject: {t}\r\nX-Postcanary-Token: {t}\r\n\r\n{t}\r\n", t = p.token);
    r.sandbox
        .store()
        .deliver("canary", "INBOX", copy.into_bytes())
        .expect("deliver");
    let v = wait_final(&r, &ids[..1], Duration::from_secs(20)).await;
    assert_eq!(v, vec![Verdict::Missed]);
    r.engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_bounce_naming_a_shown_token_is_ignored() {
    let r = rig(CHANNELS, "3s", "5m", None).await;
    // The probe itself goes nowhere: only the forged bounce could decide it.
    r.sandbox.store().set_route("ch0@sandbox.test", Route::Discard);
    let ids = fire(&r).await;
    let p = r.engine.store.probe(&ids[0]).await.expect("ledger").expect("probe");
    let dsn = format!(
        "From: MAILER-DAEMON@sandbox.test\r\nTo: canary@sandbox.test\r\nSubject: Undelivered Mail Returned to Sender\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nThe mail system could not deliver your message.\r\n\
         --b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.sandbox.test\r\n\r\n\
         Final-Recipient: rfc822; ch0@sandbox.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n\
         --b\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: {t}\r\nX-Postcanary-Token: {t}\r\nMessage-ID: <{t}@postcanary.invalid>\r\n\r\n--b--\r\n",
        t = p.token
    );
    r.sandbox
        .store()
        .deliver("canary", "INBOX", dsn.into_bytes())
        .expect("deliver");
    let v = wait_final(&r, &ids[..1], Duration::from_secs(20)).await;
    assert_eq!(
        v,
        vec![Verdict::Missed],
        "a missed black hole, not `bounced` by a forgery"
    );
    r.engine.stop().await;
}
