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
    // Every span exported so far, as (name, span id, parent span id, trace id).
    let spans = || -> Vec<(String, String, String, String)> {
        let mut out = Vec::new();
        for r in otlp.received().iter().filter(|r| r.path == "/v1/traces") {
            let v = r.json();
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for sp in ss["spans"].as_array().into_iter().flatten() {
                        let f = |k: &str| sp[k].as_str().unwrap_or("").to_string();
                        out.push((f("name"), f("spanId"), f("parentSpanId"), f("traceId")));
                    }
                }
            }
        }
        out
    };
    let (probe, all) = wait_for(
        "a finished probe span with its steps",
        Duration::from_secs(40),
        async || {
            let all = spans();
            let probe = all
                .iter()
                .find(|s| s.0 == "probe" && all.iter().any(|c| c.0 == "token_found" && c.2 == s.1))?;
            Some((probe.clone(), all))
        },
    )
    .await;
    let children: Vec<&(String, String, String, String)> = all.iter().filter(|s| s.2 == probe.1).collect();
    let send = children
        .iter()
        .find(|s| s.0 == "probe_send")
        .expect("probe_send is a child of probe");
    assert!(
        all.iter().any(|s| s.0 == "smtp" && s.2 == send.1 && s.3 == probe.3),
        "the SMTP conversation is inside the probe's trace: {all:?}"
    );
    let traces = body_of("/v1/traces");
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
