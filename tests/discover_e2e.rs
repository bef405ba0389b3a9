//! `postcanary discover` against a local site on loopback: static pages with
//! mailto: links and obfuscated addresses, a contact form, a form handing off
//! to an IdP, an old PDF with a look-alike address, a docx, a robots.txt
//! excluding a section, a page with 10,000 links, a huge page, malformed
//! HTML, a PDF bomb and a zip bomb. The report must list exactly what is
//! there, flag the look-alike and stay within robots.txt and its limits.
//! The RCPT check runs against the real test Postfix behind a real DNS server.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

#[derive(Default)]
struct Site {
    files: HashMap<String, (&'static str, Vec<u8>, Option<&'static str>)>,
    requests: AtomicUsize,
    paths: Mutex<Vec<String>>,
    agents: Mutex<BTreeSet<String>>,
}

async fn serve(State(site): State<Arc<Site>>, headers: axum::http::HeaderMap, uri: Uri) -> Response {
    site.requests.fetch_add(1, Ordering::SeqCst);
    let path = uri.path().to_string();
    site.paths.lock().unwrap_or_else(|e| e.into_inner()).push(path.clone());
    if let Some(ua) = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()) {
        site.agents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ua.to_string());
    }
    if let Some(n) = path.strip_prefix("/many/") {
        return (
            [(header::CONTENT_TYPE, "text/html")],
            format!("<p>side {n}</p><a href=\"/many/{n}/x\">x</a>"),
        )
            .into_response();
    }
    match site.files.get(&path) {
        Some((ct, body, lm)) => {
            let mut r = ([(header::CONTENT_TYPE, *ct)], body.clone()).into_response();
            if let Some(lm) = lm {
                r.headers_mut()
                    .insert(header::LAST_MODIFIED, header::HeaderValue::from_static(lm));
            }
            r
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn start(site: Site) -> (u16, Arc<Site>) {
    let site = Arc::new(site);
    let app = axum::Router::new().fallback(serve).with_state(Arc::clone(&site));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, site)
}

/// A one-page PDF whose text is `text` (Flate-compressed content stream).
fn pdf(text: &str) -> Vec<u8> {
    use lopdf::content::{Content, Operation};
    use lopdf::{dictionary, Document, Object, Stream};
    let mut doc = Document::with_version("1.4");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {"Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Courier"});
    let resources_id = doc.add_object(dictionary! {"Font" => dictionary! {"F1" => font_id}});
    let content = Content {
        operations: vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 12.into()]),
            Operation::new("Td", vec![72.into(), 700.into()]),
            Operation::new("Tj", vec![Object::string_literal(text)]),
            Operation::new("ET", vec![]),
        ],
    };
    let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().expect("encode")));
    let page_id = doc.add_object(dictionary! {"Type" => "Page", "Parent" => pages_id, "Contents" => content_id});
    let pages = dictionary! {
        "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1,
        "Resources" => resources_id, "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
    };
    doc.objects.insert(pages_id, Object::Dictionary(pages));
    let catalog_id = doc.add_object(dictionary! {"Type" => "Catalog", "Pages" => pages_id});
    doc.trailer.set("Root", catalog_id);
    doc.compress();
    let mut out = Vec::new();
    doc.save_to(&mut out).expect("save pdf");
    out
}

/// A PDF with one stream that inflates to `size` bytes.
fn pdf_bomb(size: usize) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..size / chunk.len() {
        z.write_all(&chunk).expect("deflate");
    }
    z.write_all(b"(bombe@kommune.example) Tj").expect("deflate");
    let data = z.finish().expect("deflate");
    let mut out = format!(
        "%PDF-1.4\n1 0 obj\n<< /Length {} /Filter /FlateDecode >>\nstream\n",
        data.len()
    )
    .into_bytes();
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n");
    out
}

/// A docx-shaped zip with `document` as word/document.xml.
fn docx(document: &[u8]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    w.start_file("[Content_Types].xml", opts).expect("zip");
    w.write_all(b"<?xml version=\"1.0\"?><Types/>").expect("zip");
    w.start_file("word/document.xml", opts).expect("zip");
    w.write_all(document).expect("zip");
    w.finish().expect("zip").into_inner()
}

const HTML: &str = "text/html; charset=utf-8";

fn site() -> Site {
    let mut s = Site::default();
    let mut put = |p: &str, ct: &'static str, body: Vec<u8>, lm: Option<&'static str>| {
        s.files.insert(p.to_string(), (ct, body, lm));
    };
    put(
        "/robots.txt",
        "text/plain",
        b"User-agent: *\nDisallow: /intern/\n".to_vec(),
        None,
    );
    put(
        "/",
        HTML,
        br#"<html><body><h1>Kommune</h1>
        <a href="mailto:post@kommune.example?subject=Henvendelse">Skriv til os</a>
        <a href="mailto:%62orger@kommune.example">Borgerservice</a>
        <a href="/kontakt">Kontakt</a> <a href="/borger">Selvbetjening</a>
        <a href="/intern/hemmelig">Intranet</a> <a href="/many">Arkiv</a>
        <a href="/huge">Stor side</a> <a href="/broken">Skoler</a>
        <a href="/docs/gammel.pdf">Vejledning 2008</a> <a href="/docs/vejledning.docx">Vejledning</a>
        <a href="/docs/bombe.pdf">PDF</a> <a href="/docs/bombe.docx">DOCX</a>
        <a href="http://other.example/ext">Andet sted</a>
        <a href="https://nemlog-in.dk/login">Log ind</a>
        </body></html>"#
            .to_vec(),
        Some("Mon, 02 Nov 2026 10:00:00 GMT"),
    );
    put(
        "/kontakt",
        HTML,
        br#"<html><body><p>Socialforvaltningen: social [at] kommune.example</p>
        <p>Familieafdelingen: familie (at) kommune (dot) example</p>
        <p>Byggesager: byg@@kommune.example</p>
        <p>Jobcenter: &#106;obcenter&#64;kommune&#46;example</p>
        <form id="kontakt" action="/kontakt/send" method="post"><input name="navn"><textarea name="besked"></textarea>
        <input type="hidden" name="form_token" value="x"><button>Send</button></form>
        </body></html>"#
            .to_vec(),
        Some("Tue, 03 Nov 2026 09:00:00 GMT"),
    );
    put(
        "/borger",
        HTML,
        br#"<html><body><form action="https://nemlog-in.dk/login/saml" method="post">
        <input type="hidden" name="SAMLRequest" value="PHNhbWw+"><button>Log ind med MitID</button></form>
        <form action="/soeg"><input name="q"></form></body></html>"#
            .to_vec(),
        None,
    );
    put(
        "/intern/hemmelig",
        HTML,
        b"<p>hemmelig@kommune.example</p>".to_vec(),
        None,
    );
    let mut many = String::from("<html><body>");
    for i in 0..10_000 {
        many.push_str(&format!("<a href=\"/many/{i}\">{i}</a>\n"));
    }
    put("/many", HTML, many.into_bytes(), None);
    let mut huge = b"<html><body><p>stor@kommune.example</p>".to_vec();
    huge.resize(20 << 20, b'x');
    huge.extend_from_slice(b"<p>efter@kommune.example</p></body></html>");
    put("/huge", HTML, huge, None);
    let mut broken = b"<html><body><p>Skoler <b>skole@kommune.example<div><table><tr><form action=\"/skole/send\" method=POST><input name=elev".to_vec();
    broken.extend_from_slice(&[0xff, 0xfe, 0x00, b'<', b'<', b'!', b'-', b'-']);
    put("/broken", HTML, broken, None);
    put(
        "/docs/gammel.pdf",
        "application/pdf",
        pdf("Sikker post: sikkerepost@kommune.example"),
        Some("Wed, 05 Mar 2008 12:00:00 GMT"),
    );
    put(
        "/docs/vejledning.docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        docx(br#"<?xml version="1.0"?><w:document xmlns:w="urn:w"><w:body><w:p><w:r><w:t>Skriv til sikker</w:t></w:r><w:r><w:t>post@kommune.example</w:t></w:r></w:p></w:body></w:document>"#),
        None,
    );
    put("/docs/bombe.pdf", "application/pdf", pdf_bomb(64 << 20), None);
    let mut xml = b"<?xml version=\"1.0\"?><w:document xmlns:w=\"urn:w\"><w:body><w:p><w:r><w:t>".to_vec();
    xml.resize(64 << 20, b' ');
    xml.extend_from_slice(b"bombe@kommune.example</w:t></w:r></w:p></w:body></w:document>");
    put(
        "/docs/bombe.docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        docx(&xml),
        None,
    );
    s
}

fn write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    std::fs::write(dir.join("pw"), "secret").expect("pw");
    let toml = format!(
        r#"[ledger]
url = "sqlite://ledger.db"

[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = 2525
tls = "none"
from = "canary@citizen.example"

[[inbox]]
name = "post"
kind = "imap"
host = "127.0.0.1"
port = 1143
tls = "none"
username = "post"
password = "file:pw"

[[channel]]
id = "post"
name = "Post"
kind = "mail"
to = "post@kommune.example"
inbox = "post"

[[channel]]
id = "sikkerpost"
name = "Sikker post"
kind = "mail"
to = "sikkerpost@kommune.example"
inbox = "post"

[[channel]]
id = "gammel"
name = "Retired address"
kind = "mail"
to = "gammel@kommune.example"
inbox = "post"

[[channel]]
id = "kontakt-form"
name = "Kontaktformular"
kind = "form"
inbox = "post"

[[channel.step]]
get = "http://127.0.0.1:{port}/kontakt"

[[channel.step]]
submit = "form#kontakt"
fields = {{ besked = "{{{{token}}}}" }}
"#
    );
    let path = dir.join("postcanary.toml");
    std::fs::write(&path, toml).expect("config");
    path
}

fn discover<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (std::process::ExitStatus, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postcanary"))
        .arg("discover")
        .args(args)
        .output()
        .expect("run postcanary discover");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_lists_what_is_published_and_flags_the_lookalike() {
    let (port, site) = start(site()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), port);
    let root = format!("http://127.0.0.1:{port}/");
    let c = config.to_string_lossy().to_string();
    let limits = [
        "--max-pages",
        "40",
        "--max-depth",
        "3",
        "--max-bytes",
        "1048576",
        "--max-decompressed",
        "16777216",
        "--delay",
        "0ms",
    ];
    let mut args: Vec<String> = ["-c", c.as_str(), "--site", root.as_str(), "--format", "json"]
        .map(String::from)
        .to_vec();
    args.extend(limits.map(String::from));
    let (status, out, err) = tokio::task::spawn_blocking(move || discover(&args))
        .await
        .expect("join");
    assert_eq!(status.code(), Some(1), "findings exit 1\n{out}\n{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));

    // Exactly what is there.
    let addrs: BTreeSet<String> = r["addresses"]
        .as_array()
        .expect("addresses")
        .iter()
        .filter(|a| !a["found_on"].as_array().expect("found_on").is_empty())
        .map(|a| a["address"].as_str().unwrap_or("").to_string())
        .collect();
    let want: BTreeSet<String> = [
        "post",
        "borger",
        "social",
        "familie",
        "byg",
        "jobcenter",
        "sikkerpost",
        "sikkerepost",
        "skole",
        "stor",
    ]
    .iter()
    .map(|l| format!("{l}@kommune.example"))
    .collect();
    assert_eq!(addrs, want, "{out}");
    let entry = |a: &str| {
        r["addresses"]
            .as_array()
            .and_then(|v| v.iter().find(|e| e["address"] == a).cloned())
            .unwrap_or_else(|| panic!("{a} in {out}"))
    };
    assert_eq!(entry("post@kommune.example")["found_on"][0]["how"], "mailto");
    assert_eq!(
        entry("post@kommune.example")["found_on"][0]["last_modified"],
        "Mon, 02 Nov 2026 10:00:00 GMT"
    );
    assert_eq!(entry("social@kommune.example")["found_on"][0]["how"], "obfuscated");
    assert_eq!(entry("familie@kommune.example")["found_on"][0]["how"], "obfuscated");
    assert_eq!(entry("byg@kommune.example")["found_on"][0]["how"], "obfuscated");
    assert_eq!(entry("jobcenter@kommune.example")["found_on"][0]["how"], "text");
    assert_eq!(entry("sikkerpost@kommune.example")["found_on"][0]["how"], "office");
    let old = entry("sikkerepost@kommune.example");
    assert_eq!(old["found_on"][0]["how"], "pdf");
    assert_eq!(old["found_on"][0]["url"], format!("{root}docs/gammel.pdf"));
    assert_eq!(old["found_on"][0]["last_modified"], "Wed, 05 Mar 2008 12:00:00 GMT");
    assert_eq!(entry("post@kommune.example")["probed_by"][0]["channel"], "post");
    assert!(entry("social@kommune.example")["probed_by"]
        .as_array()
        .expect("list")
        .is_empty());

    // Probed but no longer published.
    assert_eq!(r["no_longer_published"][0]["channel"], "gammel", "{out}");
    assert_eq!(r["no_longer_published"].as_array().expect("list").len(), 1);

    // The look-alike.
    let looks = r["lookalikes"].as_array().expect("lookalikes");
    assert_eq!(looks.len(), 1, "{out}");
    assert_eq!(looks[0]["address"], "sikkerepost@kommune.example");
    assert_eq!(looks[0]["resembles"], "sikkerpost@kommune.example");
    assert_eq!(looks[0]["distance"], 1);
    assert_eq!(looks[0]["covered"], false);
    assert!(looks[0]["advice"].as_str().unwrap_or("").contains("bounce"));

    // Forms: the contact form (probed), the IdP hand-off, the search, the broken page's.
    let forms = r["forms"].as_array().expect("forms");
    let form = |action: &str| {
        forms
            .iter()
            .find(|f| f["action"] == action)
            .cloned()
            .unwrap_or_else(|| panic!("form {action} in {out}"))
    };
    assert_eq!(forms.len(), 4, "{out}");
    let kontakt = form(&format!("{root}kontakt/send"));
    assert_eq!(kontakt["method"], "POST");
    assert_eq!(kontakt["probed_by"][0]["channel"], "kontakt-form");
    assert_eq!(kontakt["pages"][0]["last_modified"], "Tue, 03 Nov 2026 09:00:00 GMT");
    assert!(kontakt["handoff"].is_null());
    let login = form("https://nemlog-in.dk/login/saml");
    assert!(
        login["handoff"].as_str().unwrap_or("").contains("nemlog-in.dk"),
        "{login}"
    );
    assert!(form(&format!("{root}soeg"))["handoff"].is_null());
    assert_eq!(form(&format!("{root}skole/send"))["method"], "POST");
    assert!(r["login_links"]["https://nemlog-in.dk/login"].is_array(), "{out}");

    // robots.txt and the limits.
    let paths = site.paths.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        !paths.iter().any(|p| p.starts_with("/intern")),
        "robots.txt honoured: {paths:?}"
    );
    assert_eq!(r["robots_excluded"], 1);
    let requests = site.requests.load(Ordering::SeqCst);
    assert!(requests <= 41, "40 pages and robots.txt at most, got {requests}");
    assert_eq!(r["requests"].as_u64(), Some(requests as u64));
    assert_eq!(
        r["pages"].as_u64().unwrap_or(0) + r["documents"].as_u64().unwrap_or(0),
        40
    );
    assert!(
        r["limited"].as_u64().unwrap_or(0) > 9_000,
        "the link flood is left: {out}"
    );
    let notes = r["notes"].to_string();
    assert!(notes.contains("/huge: body over 1048576 bytes"), "{notes}");
    assert!(
        notes.contains("bombe.pdf: document not read") && notes.contains("bombe.docx: document not read"),
        "{notes}"
    );

    let agents = site.agents.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(agents.len(), 1, "{agents:?}");
    let ua = agents.iter().next().cloned().unwrap_or_default();
    assert!(ua.starts_with("postcanary-discover/") && ua.contains("(+"), "{ua}");

    // The table names what to act on.
    let mut args: Vec<String> = ["-c", c.as_str(), "--site", root.as_str()].map(String::from).to_vec();
    args.extend(limits.map(String::from));
    let (_, table, _) = tokio::task::spawn_blocking(move || discover(&args))
        .await
        .expect("join");
    assert!(
        table.contains("NOT PROBED") && table.contains("NO LONGER PUBLISHED"),
        "{table}"
    );
    assert!(
        table.contains("sikkerepost@kommune.example resembles sikkerpost@kommune.example (distance 1)"),
        "{table}"
    );

    // The same crawl as `[[channel]]` stubs: valid TOML, the look-alike as a bounce.
    let mut args: Vec<String> = ["-c", c.as_str(), "--site", root.as_str(), "--format", "toml"]
        .map(String::from)
        .to_vec();
    args.extend(limits.map(String::from));
    let (_, stubs, err) = tokio::task::spawn_blocking(move || discover(&args))
        .await
        .expect("join");
    let parsed: toml::Value = toml::from_str(&stubs).unwrap_or_else(|e| panic!("{e}\n{stubs}\n{err}"));
    let channels = parsed["channel"].as_array().expect("channels");
    let look = channels
        .iter()
        .find(|c| c["to"].as_str() == Some("sikkerepost@kommune.example"))
        .unwrap_or_else(|| panic!("{stubs}"));
    assert_eq!(look["expect"].as_str(), Some("bounce"));
    assert!(
        stubs.contains("# published on") && stubs.contains("Last-Modified Wed, 05 Mar 2008"),
        "{stubs}"
    );
    // 9 unmonitored addresses - post and sikkerpost are probed - and 3 unprobed forms.
    assert_eq!(channels.len(), 8 + 3, "{stubs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rcpt_check_tells_an_accepted_lookalike_from_a_refused_one() {
    use support::dns::{DnsServer, Zone};
    let stack = support::mailstack::MailStack::start();
    let mut vmailbox = std::fs::read_to_string(stack.dir.path().join("postfix/vmailbox")).expect("vmailbox");
    vmailbox.push_str("sikkerpost@kommune.example OK\nsikkerepost@kommune.example OK\n");
    stack.set_map("vmailbox", &vmailbox);
    let dns = DnsServer::start(
        &Zone::new("kommune.example")
            .mx(10, "mx.kommune.example")
            .a("mx.kommune.example", "127.0.0.1"),
    );
    let mut s = Site::default();
    s.files.insert(
        "/".into(),
        (
            HTML,
            b"<p>sikkerpost@kommune.example</p><p>Gammel: sikkerepost@kommune.example</p><p>Fejl: sikkerpst@kommune.example</p>".to_vec(),
            None,
        ),
    );
    let (port, _site) = start(s).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pw"), "x").expect("pw");
    let config = dir.path().join("postcanary.toml");
    std::fs::write(
        &config,
        format!(
            "[[sender]]\nname = \"citizen\"\nkind = \"mx\"\nport = {}\nnameserver = \"{}\"\nfrom = \"borger@citizen.example\"\ntimeout = \"10s\"\n\n\
             [[inbox]]\nname = \"post\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"social\"\npassword = \"file:pw\"\n\n\
             [[channel]]\nid = \"sikkerpost\"\nname = \"Sikker post\"\nkind = \"mail\"\nto = \"sikkerpost@kommune.example\"\ninbox = \"post\"\n",
            stack.smtp_port, dns.addr, stack.imap_port
        ),
    )
    .expect("config");
    let c = config.to_string_lossy().to_string();
    let root = format!("http://127.0.0.1:{port}/");
    let (status, out, err) = tokio::task::spawn_blocking(move || {
        discover(&[
            "-c",
            &c,
            "--site",
            &root,
            "--format",
            "json",
            "--delay",
            "0ms",
            "--rcpt-check",
            "citizen",
        ])
    })
    .await
    .expect("join");
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    let rcpt = |a: &str| {
        r["addresses"]
            .as_array()
            .and_then(|v| v.iter().find(|e| e["address"] == a))
            .map(|e| e["rcpt"]["answer"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        rcpt("sikkerpost@kommune.example"),
        "accepted",
        "{out}\n{}",
        stack.log_tail()
    );
    assert_eq!(rcpt("sikkerepost@kommune.example"), "accepted", "{out}");
    assert_eq!(rcpt("sikkerpst@kommune.example"), "refused", "{out}");
    let advice = |a: &str| {
        r["lookalikes"]
            .as_array()
            .and_then(|v| v.iter().find(|l| l["address"] == a))
            .map(|l| l["advice"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert!(
        advice("sikkerepost@kommune.example").starts_with("ACCEPTED at RCPT time"),
        "{out}"
    );
    assert!(
        advice("sikkerpst@kommune.example").starts_with("refused at RCPT time"),
        "{out}"
    );
    // Nothing was sent: no message in any mailbox, no DATA in the log.
    let log = std::fs::read_to_string(stack.dir.path().join("postfix/maillog")).unwrap_or_default();
    assert!(!log.contains("status=sent"), "{log}");
}
