//! `postcanary run` reloads its config on SIGHUP: a changed schedule takes
//! effect without a restart; an invalid config keeps the old one running
//! and says why (`/api/reload`, the page's banner).

use std::time::{Duration, Instant};

fn config(port: u16, schedule: &str, extra: &str) -> String {
    format!(
        r#"[ledger]
url = "sqlite://ledger.db"
[defaults]
notify = []
schedule = "{schedule}"
[server]
listen = "127.0.0.1:{port}"
[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = 9
tls = "none"
from = "canary@kommune.example"
[[channel]]
id = "social-mail"
name = "Social"
kind = "mail"
to = "social@kommune.example"
expect = "bounce"
{extra}
"#
    )
}

async fn get_json(url: &str) -> Option<serde_json::Value> {
    reqwest::get(url).await.ok()?.json().await.ok()
}

/// Polls `url` until `check` holds (at most 30 s).
async fn until(url: &str, check: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = get_json(url).await {
            if check(&v) {
                return v;
            }
        }
        assert!(Instant::now() < end, "{url} never satisfied the check");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sighup_reloads_a_changed_schedule_and_keeps_the_old_config_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.path().join("postcanary.toml");
    std::fs::write(&path, config(port, "every 10m", "")).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_postcanary"))
        .arg("run")
        .arg("-c")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    let channels = format!("http://127.0.0.1:{port}/api/channels");
    let status = format!("http://127.0.0.1:{port}/api/reload");
    until(&channels, |v| v[0]["schedule"] == "every 10m").await;

    std::fs::write(&path, config(port, "every 5m", "")).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    until(&channels, |v| v[0]["schedule"] == "every 5m").await;
    let st = until(&status, |v| v["ok"] == true).await;
    assert!(st["changes"][0].as_str().unwrap_or("").contains("every 5m"), "{st}");

    std::fs::write(
        &path,
        config(
            port,
            "every 1m",
            "[[channel]]\nid = \"social-mail\"\nname = \"twice\"\nkind = \"mail\"\nto = \"x@kommune.example\"",
        ),
    )
    .unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let st = until(&status, |v| v["ok"] == false).await;
    assert!(st["errors"].as_array().is_some_and(|e| !e.is_empty()), "{st}");
    let page = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("id=\"reload-errors\""),
        "the page shows the refused reload"
    );
    let still = get_json(&channels).await.unwrap();
    assert_eq!(still[0]["schedule"], "every 5m", "the old config keeps running");
    assert!(child.try_wait().unwrap().is_none(), "still running");

    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let code = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(code.success(), "{code:?}");
}
