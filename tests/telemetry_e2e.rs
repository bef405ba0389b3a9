//! OpenTelemetry export: the daemon sends traces and metrics over OTLP/HTTP
//! (JSON) to a local receiver.

mod support;

use std::time::Duration;

use support::canary::{wait_for, Daemon};
use support::mailstack::MailStack;
use support::receiver::Receiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_and_metrics_reach_an_otlp_receiver() {
    let stack = MailStack::start();
    let otlp = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("social.pw"), stack.password("social")).unwrap();
    let toml = format!(
        r#"[ledger]
url = "sqlite://ledger.db"

[telemetry]
otlp_endpoint = "{otlp}"
service_name = "postcanary-test"
export_interval = "1s"

[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = {smtp}
tls = "none"
from = "canary@kommune.example"

[[inbox]]
name = "social"
kind = "imap"
host = "127.0.0.1"
port = {imap}
tls = "none"
username = "social"
password = "file:social.pw"

[[channel]]
id = "social-mail"
name = "Social"
kind = "mail"
to = "social@kommune.example"
inbox = "social"
schedule = "every 3s"
deadline = "20s"
"#,
        otlp = otlp.url(""),
        smtp = stack.smtp_port,
        imap = stack.imap_port,
    );
    let config = dir.path().join("postcanary.toml");
    std::fs::write(&config, toml).unwrap();
    let mut daemon = Daemon::start(&config, &dir.path().join("daemon.log"));
    let body_of = |path: &str| -> String {
        otlp.received()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect()
    };
    let traces = wait_for("a probe span", Duration::from_secs(40), async || {
        let t = body_of("/v1/traces");
        (t.contains("\"probe\"") && t.contains("postcanary.verdict") && t.contains("\"smtp\"")).then_some(t)
    })
    .await;
    assert!(traces.contains("postcanary-test"), "service name as resource attribute");
    assert!(traces.contains("delivered"), "{traces}");
    let metrics = wait_for("the probe counter", Duration::from_secs(20), async || {
        let m = body_of("/v1/metrics");
        (m.contains("postcanary.probes") && m.contains("postcanary.delivery.latency")).then_some(m)
    })
    .await;
    assert!(metrics.contains("social-mail"), "{metrics}");
    assert!(daemon.terminate().success());
    let reqs = otlp.received();
    assert!(
        reqs.iter()
            .all(|r| r.method == "POST" && r.header("content-type") == Some("application/json")),
        "OTLP/HTTP JSON"
    );
}
