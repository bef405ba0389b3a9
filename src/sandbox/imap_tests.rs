//! Tests of the sandbox IMAP server, through async-imap as the watcher uses
//! it and through a raw socket for hostile input.

use std::time::{Duration, Instant};

use async_imap::extensions::idle::IdleResponse;
use async_imap::Session;
use futures::TryStreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::*;
use crate::sandbox::store::Route;

fn store() -> MailStore {
    let store = MailStore::new();
    store.add_user("canary", "secret");
    store.set_route("canary@sandbox.test", Route::deliver("canary", "INBOX"));
    store
}

fn mail(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Prober <prober@example.net>\r\nTo: canary@sandbox.test\r\nSubject: {subject}\r\n\
         X-Postcanary-Token: tok-{subject}\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

async fn login(server: &ImapServer) -> Session<TcpStream> {
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    let mut client = async_imap::Client::new(tcp);
    client.read_response().await.unwrap().unwrap();
    client.login("canary", "secret").await.map_err(|(e, _)| e).unwrap()
}

#[tokio::test]
async fn login_select_search_and_fetch() {
    let store = store();
    store.deliver("canary", "INBOX", mail("one", "first body")).unwrap();
    store.deliver("canary", "INBOX", mail("two", "second body")).unwrap();
    let server = ImapServer::start(store.clone(), ImapOptions::default()).await.unwrap();
    let mut s = login(&server).await;

    let caps = s.capabilities().await.unwrap();
    for c in ["IMAP4rev1", "IDLE", "UIDPLUS", "MOVE"] {
        assert!(caps.has_str(c), "{c}");
    }
    let mb = s.select("INBOX").await.unwrap();
    assert_eq!(mb.exists, 2);
    assert_eq!(mb.uid_validity, Some(store.uid_validity("canary", "INBOX").unwrap()));
    assert_eq!(mb.uid_next, Some(3));

    let all = s.uid_search("ALL").await.unwrap();
    assert_eq!(all.len(), 2);
    let from2 = s.uid_search("UID 2:*").await.unwrap();
    assert_eq!(from2.into_iter().collect::<Vec<_>>(), vec![2]);
    // "n:*" above the highest UID still matches the highest (RFC 3501 6.4.8).
    assert_eq!(
        s.uid_search("UID 9:*").await.unwrap().into_iter().collect::<Vec<_>>(),
        vec![2]
    );
    let today = Utc::now().date_naive() - chrono::Days::new(1);
    assert_eq!(
        s.uid_search(format!("SINCE {}", today.format("%d-%b-%Y")))
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(s.uid_search("SINCE 1-Jan-2999").await.unwrap().is_empty());
    let by_header = s.uid_search("HEADER X-Postcanary-Token tok-two").await.unwrap();
    assert_eq!(by_header.into_iter().collect::<Vec<_>>(), vec![2]);
    let by_text = s.uid_search("TEXT \"FIRST BODY\"").await.unwrap();
    assert_eq!(by_text.into_iter().collect::<Vec<_>>(), vec![1]);
    assert_eq!(s.uid_search("OR SUBJECT one SUBJECT two").await.unwrap().len(), 2);
    assert_eq!(s.uid_search("NOT SUBJECT one UNSEEN").await.unwrap().len(), 1);

    // As the watcher fetches: sizes, then whole bodies without setting \Seen.
    let sizes: Vec<_> = s
        .uid_fetch("1:2", "(UID RFC822.SIZE)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(sizes.len(), 2);
    assert_eq!(sizes[0].size, Some(mail("one", "first body").len() as u32));
    let bodies: Vec<_> = s
        .uid_fetch("1,2", "(UID BODY.PEEK[])")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(bodies[1].uid, Some(2));
    assert_eq!(bodies[1].body(), Some(&mail("two", "second body")[..]));
    assert!(store
        .messages("canary", "INBOX")
        .unwrap()
        .iter()
        .all(|m| m.flags.is_empty()));

    let headers: Vec<_> = s
        .uid_fetch(
            "2",
            "(UID BODY.PEEK[HEADER] BODY.PEEK[HEADER.FIELDS (SUBJECT)] INTERNALDATE FLAGS)",
        )
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(headers[0].header().unwrap().ends_with(b"tok-two\r\n\r\n"));
    assert!(headers[0].internal_date().is_some());

    // BODY[] (no PEEK) and RFC822 by sequence number set \Seen.
    let seen: Vec<_> = s
        .fetch("1", "(BODY[] RFC822)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].flags().any(|f| f == async_imap::types::Flag::Seen));
    assert!(store.messages("canary", "INBOX").unwrap()[0].has_flag("\\Seen"));
    assert_eq!(
        s.uid_search("SEEN").await.unwrap().into_iter().collect::<Vec<_>>(),
        vec![1]
    );
    s.logout().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn idle_hears_of_new_mail_at_once() {
    let store = store();
    let server = ImapServer::start(store.clone(), ImapOptions::default()).await.unwrap();
    let mut s = login(&server).await;
    s.select("INBOX").await.unwrap();
    let mut idle = s.idle();
    idle.init().await.unwrap();
    let (wait, _stop) = idle.wait_with_timeout(Duration::from_secs(5));
    let delivered = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let at = Instant::now();
            store.deliver("canary", "INBOX", mail("idle", "x")).unwrap();
            at
        })
    };
    let r = wait.await.unwrap();
    let heard = Instant::now();
    let at = delivered.await.unwrap();
    let IdleResponse::NewData(data) = r else {
        panic!("expected new data, got {r:?}");
    };
    assert!(
        matches!(
            data.parsed(),
            async_imap::imap_proto::Response::MailboxData(async_imap::imap_proto::MailboxDatum::Exists(1))
        ),
        "{:?}",
        data.parsed()
    );
    assert!(heard - at < Duration::from_millis(100), "{:?}", heard - at);
    let mut s = idle.done().await.unwrap();
    assert_eq!(s.uid_search("ALL").await.unwrap().len(), 1);
    s.logout().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn move_store_expunge_and_folders() {
    let store = store();
    for i in 0..4 {
        store.deliver("canary", "INBOX", mail(&format!("m{i}"), "x")).unwrap();
    }
    let server = ImapServer::start(store.clone(), ImapOptions::default()).await.unwrap();
    let mut s = login(&server).await;
    s.create("Confirmed").await.unwrap();
    assert!(s.create("Confirmed").await.is_err());
    let names: Vec<_> = s.list(Some(""), Some("*")).await.unwrap().try_collect().await.unwrap();
    let mut names: Vec<String> = names.iter().map(|n| n.name().to_string()).collect();
    names.sort();
    assert_eq!(names, vec!["Confirmed", "INBOX", "Junk"]);

    s.select("INBOX").await.unwrap();
    s.uid_mv("2", "Confirmed").await.unwrap();
    assert_eq!(store.messages("canary", "Confirmed").unwrap().len(), 1);
    assert_eq!(store.messages("canary", "INBOX").unwrap().len(), 3);
    assert!(s.uid_mv("1", "Nope").await.is_err());

    s.uid_copy("3", "Junk").await.unwrap();
    assert_eq!(store.messages("canary", "Junk").unwrap().len(), 1);

    // Flag two, expunge only one of them by UID (UIDPLUS).
    let updated: Vec<_> = s
        .uid_store("3,4", "+FLAGS (\\Deleted)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(updated.len(), 2);
    let gone: Vec<_> = s.uid_expunge("4").await.unwrap().try_collect().await.unwrap();
    assert_eq!(gone, vec![3], "sequence number of UID 4 after the move");
    let left: Vec<u32> = store
        .messages("canary", "INBOX")
        .unwrap()
        .iter()
        .map(|m| m.uid)
        .collect();
    assert_eq!(left, vec![1, 3]);
    // The session's sequence numbers follow: UID 3 is now number 2.
    let f: Vec<_> = s.fetch("2", "(UID)").await.unwrap().try_collect().await.unwrap();
    assert_eq!(f[0].uid, Some(3));
    let gone: Vec<_> = s.expunge().await.unwrap().try_collect().await.unwrap();
    assert_eq!(gone, vec![2]);

    let st = s
        .status("Confirmed", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
        .await
        .unwrap();
    assert_eq!(st.exists, 1);
    assert_eq!(st.uid_next, Some(2));

    // APPEND goes through a synchronizing literal.
    s.append("Junk", Some("(\\Seen)"), None, mail("appended", "x"))
        .await
        .unwrap();
    let junk = store.messages("canary", "Junk").unwrap();
    assert_eq!(junk.len(), 2);
    assert!(junk[1].has_flag("\\Seen"));

    // Another session's changes show up as EXISTS/EXPUNGE on the next command.
    store.deliver("canary", "INBOX", mail("late", "x")).unwrap();
    s.noop().await.unwrap();
    let found = s.uid_search("ALL").await.unwrap();
    assert_eq!(found.len(), 2);
    s.close().await.unwrap();
    s.examine("INBOX").await.unwrap();
    // async-imap ends a STORE stream at the tagged line whatever its status
    // (NO here), so look at the store itself.
    let answered: Vec<_> = s
        .uid_store("1", "+FLAGS (\\Deleted)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(answered.is_empty());
    assert!(
        !store.messages("canary", "INBOX").unwrap()[0].has_flag("\\Deleted"),
        "EXAMINE is read-only"
    );
    s.logout().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn faults_dropped_connections_refused_logins_and_delay() {
    let store = store();
    let server = ImapServer::start(store.clone(), ImapOptions::default()).await.unwrap();
    let mut s = login(&server).await;
    s.select("INBOX").await.unwrap();
    let mut idle = s.idle();
    idle.init().await.unwrap();
    let (wait, _stop) = idle.wait_with_timeout(Duration::from_secs(5));
    let (r, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(2), wait), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.drop_connections();
    });
    let r = r.unwrap();
    assert!(r.is_err(), "a reset mid-IDLE is an error for the client: {r:?}");

    // New connections still work; and dropping them again fails the next command.
    let mut s = login(&server).await;
    server.drop_connections();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(s.noop().await.is_err());

    server.faults().refuse_logins(true);
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    let mut client = async_imap::Client::new(tcp);
    client.read_response().await.unwrap().unwrap();
    assert!(client.login("canary", "secret").await.is_err());
    server.faults().refuse_logins(false);

    server.faults().set_delay(Duration::from_millis(40));
    let started = Instant::now();
    let mut s = login(&server).await;
    s.noop().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(120));
    server.faults().clear();

    server.faults().hide_idle(true);
    assert!(!s.capabilities().await.unwrap().has_str("IDLE"));
    server.shutdown().await;
}

struct Raw {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    async fn connect(server: &ImapServer) -> Raw {
        let (r, w) = TcpStream::connect(server.addr()).await.unwrap().into_split();
        let mut raw = Raw {
            r: BufReader::new(r),
            w,
        };
        assert!(raw.line().await.starts_with("* OK"));
        raw
    }
    async fn line(&mut self) -> String {
        let mut l = String::new();
        tokio::time::timeout(Duration::from_secs(2), self.r.read_line(&mut l))
            .await
            .unwrap()
            .unwrap();
        l
    }
    async fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.unwrap();
    }
    /// Sends a command and returns its lines up to the tagged one.
    async fn command(&mut self, tag: &str, bytes: &[u8]) -> Vec<String> {
        self.send(bytes).await;
        let mut lines = Vec::new();
        loop {
            let l = self.line().await;
            let done = l.starts_with(&format!("{tag} ")) || l.is_empty();
            lines.push(l);
            if done {
                return lines;
            }
        }
    }
}

#[tokio::test]
async fn hostile_input_gets_bad_and_the_server_stays_up() {
    let store = store();
    store.deliver("canary", "INBOX", mail("one", "x")).unwrap();
    let options = ImapOptions {
        max_literal: 1024,
        ..ImapOptions::default()
    };
    let server = ImapServer::start(store.clone(), options).await.unwrap();
    let mut c = Raw::connect(&server).await;
    assert!(c.command("*", b"\xff\xfe\x00garbage\r\n").await[0].starts_with("* BAD"));
    assert!(c.command("a1", b"a1 FROBNICATE\r\n").await[0].starts_with("a1 BAD"));
    assert!(
        c.command("a2", b"a2 SELECT INBOX\r\n").await[0].starts_with("a2 BAD"),
        "not logged in"
    );
    let mut long = b"a3 NOOP ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 100_000));
    long.extend_from_slice(b"\r\n");
    assert!(c.command("*", &long).await[0].starts_with("* BAD"));
    assert!(c.command("a4", b"a4 LOGIN {99999999999}\r\n").await[0].starts_with("a4 BAD Literal too large"));
    assert!(c.command("a5", b"a5 LOGIN ((((((((((((x))))))))))))\r\n").await[0].starts_with("a5 BAD"));
    assert!(c.command("a6", b"a6 LOGIN \"unterminated\r\n").await[0].starts_with("a6 BAD"));
    // A literal within bounds works: LOGIN with the password as a literal.
    c.send(b"a7 LOGIN canary {6}\r\n").await;
    assert!(c.line().await.starts_with("+ "));
    assert!(c.command("a7", b"secret\r\n").await[0].starts_with("a7 OK"));
    let sel = c.command("a8", b"a8 SELECT INBOX\r\n").await;
    assert!(sel.last().unwrap().starts_with("a8 OK [READ-WRITE]"), "{sel:?}");
    for bad in [
        &b"a9 UID FETCH 1:* (ENVELOPE)\r\n"[..],
        b"a9 UID FETCH x:y (UID)\r\n",
        b"a9 UID FETCH 1 (BODY[HEADER.FIELDS (]\r\n",
        b"a9 UID SEARCH SINCE notadate\r\n",
        b"a9 UID SEARCH NOT NOT NOT\r\n",
        b"a9 UID STORE 1 +FLAGS (\\Bogus)\r\n",
        b"a9 UID FROB 1\r\n",
        b"a9 LIST \"\" \"*%*%*%*%*%*%*%*%*%\"\r\n",
    ] {
        let r = c.command("a9", bad).await;
        assert!(
            r.last().unwrap().starts_with("a9 BAD"),
            "{:?} -> {r:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let r = c.command("b1", b"b1 UID FETCH 1 (UID BODY.PEEK[]<0.4>)\r\n").await;
    assert_eq!(r[0], "* 1 FETCH (UID 1 BODY[]<0> {4}\r\n");
    assert!(r.last().unwrap().starts_with("b1 OK"));
    // IDLE that is ended by something other than DONE.
    c.send(b"b2 IDLE\r\n").await;
    assert!(c.line().await.starts_with("+ "));
    assert!(c.command("b2", b"NOT DONE\r\n").await[0].starts_with("b2 BAD"));
    // A non-synchronizing literal that is too large ends the session.
    let r = c.command("b3", b"b3 LOGIN {999999+}\r\n").await;
    assert!(r[0].starts_with("b3 BAD"));
    assert!(c.line().await.starts_with("* BYE"));
    // And the server still serves.
    let mut s = login(&server).await;
    assert_eq!(s.select("INBOX").await.unwrap().exists, 1);
    server.shutdown().await;
}

#[test]
fn syntax_helpers() {
    assert_eq!(
        tokenize(b"a UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]<0.10>)").unwrap(),
        vec![
            Tok::Atom("a".into()),
            Tok::Atom("UID".into()),
            Tok::Atom("FETCH".into()),
            Tok::Atom("1:*".into()),
            Tok::List(vec![
                Tok::Atom("UID".into()),
                Tok::Atom("BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]<0.10>".into())
            ]),
        ]
    );
    assert_eq!(
        tokenize(b"a LOGIN \"x\\\"y\" {3}\r\nabc").unwrap()[2..],
        [Tok::Str(b"x\"y".to_vec()), Tok::Str(b"abc".to_vec())]
    );
    assert!(tokenize(b"a LOGIN {10}\r\nabc").is_err());
    assert_eq!(literal_suffix(b"a LOGIN {12}"), Some((12, false)));
    assert_eq!(literal_suffix(b"a LOGIN {12+}"), Some((12, true)));
    assert_eq!(literal_suffix(b"a LOGIN {}"), None);
    let set = SeqSet::parse("1,3:5,9:*").unwrap();
    assert!(set.contains(4, 20) && set.contains(20, 20) && !set.contains(2, 20));
    assert!(SeqSet::parse("0").is_none() && SeqSet::parse("1:").is_none());
    assert_eq!(compact_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
    assert!(wildcard_match(b"*", b"a/b") && wildcard_match(b"%", b"a") && !wildcard_match(b"%", b"a/b"));
    assert!(wildcard_match(b"Ar%/2024", b"Archive/2024"));
    assert_eq!(
        NaiveDate::parse_from_str("1-Feb-1994", "%d-%b-%Y").unwrap(),
        NaiveDate::from_ymd_opt(1994, 2, 1).unwrap()
    );
    let raw = b"Subject: a\r\n b\r\nFrom: x\r\nTo: y\r\n\r\nbody\r\n";
    let (h, t) = split_message(raw);
    assert_eq!(t, b"body\r\n");
    assert_eq!(
        select_fields(h, &["SUBJECT".into(), "to".into()], false),
        b"Subject: a\r\n b\r\nTo: y\r\n\r\n"
    );
    assert_eq!(select_fields(h, &["SUBJECT".into()], true), b"From: x\r\nTo: y\r\n\r\n");
}
