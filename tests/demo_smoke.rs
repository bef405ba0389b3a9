//! `postcanary demo` as a newcomer runs it: it prints the status page's
//! address, the silent failures of the seed incident page on their first
//! miss, and Ctrl-C (SIGINT) ends it cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[test]
fn demo_pages_the_black_holes_and_stops_on_ctrl_c() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_postcanary"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let t0 = Instant::now();
    let wanted = [
        "status page: http://127.0.0.1:",
        "PAGE trigger familiepost-retired: missed",
        "PAGE trigger sikkerepost-lookalike: missed — black hole",
    ];
    while !wanted.iter().all(|w| seen.iter().any(|l: &String| l.contains(w))) {
        let left = Duration::from_secs(60).saturating_sub(t0.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("the demo did not page within 60 s; it printed:\n{}", seen.join("\n"));
            }
        }
    }
    // The status page answers while the story runs.
    let url = seen
        .iter()
        .find_map(|l| l.split("status page: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .expect("status page URL")
        .to_string();
    let host = url.trim_start_matches("http://").trim_end_matches('/').to_string();
    let mut conn = std::net::TcpStream::connect(&host).expect("connect to the status page");
    std::io::Write::write_all(
        &mut conn,
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("request");
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut conn, &mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{}",
        answer.lines().next().unwrap_or("")
    );
    assert!(answer.contains("familiepost-retired") || answer.contains("Retired shared mailbox"));
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let t1 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(15),
            "the demo did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(rest.iter().any(|l| l == "demo stopped"), "{rest:?}");
}
