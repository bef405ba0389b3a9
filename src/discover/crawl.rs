//! The polite crawler: robots.txt honoured (`texting_robots`, RFC 9309:
//! a robots.txt that cannot be fetched because of a server error forbids
//! everything), only the sites' hosts and `--allow-host`, page/depth/byte
//! limits, one request at a time with a delay (or the site's Crawl-delay,
//! whichever is longer), a clear User-Agent, bodies read up to a cap, and
//! redirects followed by hand so each hop is checked like a link. Logins
//! are never followed and forms never submitted.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use url::Url;

use super::docs::{self, DocKind};
use super::extract::{self, FormFacts, How};
use super::Limits;

/// The User-Agent: product/version, then where a webmaster reads what this is.
pub fn user_agent(contact: &str) -> String {
    format!(
        "postcanary-discover/{} (+{contact}; read-only public-channel discovery)",
        env!("CARGO_PKG_VERSION")
    )
}
/// The project's page, until the operator names their own with `--contact`.
pub const DEFAULT_CONTACT: &str = "https://postcanary.invalid/discover";
const ROBOTS_AGENT: &str = "postcanary-discover";

/// Where something was found: the page (or document) and its Last-Modified.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Source {
    pub url: String,
    pub how: How,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FoundForm {
    pub action: String,
    pub method: String,
    pub fields: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff: Option<String>,
    pub pages: Vec<Source>,
}

/// What a crawl found and what it cost.
#[derive(Debug, Default, serde::Serialize)]
pub struct Crawl {
    pub requests: usize,
    pub pages: usize,
    pub documents: usize,
    pub bytes: u64,
    pub addresses: BTreeMap<String, Vec<Source>>,
    pub forms: Vec<FoundForm>,
    pub login_links: BTreeMap<String, Vec<String>>,
    /// URLs not fetched because robots.txt forbids them.
    pub robots_excluded: usize,
    /// Links left because a limit was reached.
    pub limited: usize,
    /// Notes: truncated bodies, unreadable documents, failed requests.
    pub notes: Vec<String>,
}

const MAX_NOTES: usize = 200;
const MAX_QUEUE: usize = 50_000;

impl Crawl {
    fn note(&mut self, n: String) {
        if self.notes.len() < MAX_NOTES {
            self.notes.push(n);
        }
    }
    fn add_address(&mut self, a: String, src: Source) {
        let list = self.addresses.entry(a).or_default();
        if !list.contains(&src) {
            list.push(src);
        }
    }
}

fn origin(u: &Url) -> String {
    u.origin().ascii_serialization()
}

struct Robots {
    by_origin: HashMap<String, Option<texting_robots::Robot>>,
}

/// Crawls the sites within `limits`.
pub async fn crawl(sites: &[Url], limits: &Limits) -> Result<Crawl, String> {
    let client = reqwest::Client::builder()
        .user_agent(user_agent(&limits.contact))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(limits.timeout)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let mut hosts: HashSet<String> = sites
        .iter()
        .filter_map(|u| u.host_str().map(str::to_ascii_lowercase))
        .collect();
    hosts.extend(limits.allow_hosts.iter().map(|h| h.to_ascii_lowercase()));
    let mut out = Crawl::default();
    let mut robots = Robots {
        by_origin: HashMap::new(),
    };
    let mut queue: VecDeque<(Url, usize)> = sites.iter().map(|u| (u.clone(), 0)).collect();
    let mut seen: HashSet<String> = sites.iter().map(|u| u.to_string()).collect();
    let mut last_request: Option<Instant> = None;
    let mut fetched = 0usize;
    let started = Instant::now();
    while let Some((url, depth)) = queue.pop_front() {
        // Every request counts against the page budget, redirects and errors too,
        // so a site answering 404 or 302 to 10,000 links costs no more.
        if fetched >= limits.max_pages || out.bytes >= limits.max_total_bytes {
            out.limited += 1 + queue.len();
            break;
        }
        // robots.txt, fetched once per origin (its request counts and waits like any other).
        let o = origin(&url);
        if !robots.by_origin.contains_key(&o) {
            wait(&mut last_request, limits.delay).await;
            out.requests += 1;
            let robot = fetch_robots(&client, &url, limits, &mut out).await;
            robots.by_origin.insert(o.clone(), robot);
        }
        let delay = match robots.by_origin.get(&o) {
            Some(Some(r)) => {
                if !r.allowed(url.as_str()) {
                    out.robots_excluded += 1;
                    continue;
                }
                let cd = r
                    .delay
                    .map(|d| Duration::from_secs_f32(d.clamp(0.0, 30.0)))
                    .unwrap_or_default();
                limits.delay.max(cd)
            }
            Some(None) => {
                out.robots_excluded += 1;
                continue;
            }
            None => limits.delay,
        };
        wait(&mut last_request, delay).await;
        out.requests += 1;
        fetched += 1;
        let resp = match client.get(url.clone()).send().await {
            Ok(r) => r,
            Err(e) => {
                out.note(format!("{url}: {e}"));
                continue;
            }
        };
        let status = resp.status();
        if status.is_redirection() {
            if let Some(next) = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
            {
                enqueue(&mut queue, &mut seen, &hosts, limits, &mut out, next, depth);
            }
            continue;
        }
        if !status.is_success() {
            out.note(format!("{url}: HTTP {}", status.as_u16()));
            continue;
        }
        let header = |name: reqwest::header::HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let last_modified = header(reqwest::header::LAST_MODIFIED);
        let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
        let doc = docs::doc_kind(&content_type, url.path());
        let is_html = content_type.is_empty() || content_type.contains("html") || content_type.contains("xml");
        let is_text = content_type.starts_with("text/");
        if doc.is_none() && !is_html && !is_text {
            continue; // an image, a video, …: nothing to read
        }
        let cap = limits.max_bytes.min(limits.max_total_bytes.saturating_sub(out.bytes));
        let (body, truncated) = read_body(resp, cap).await;
        out.bytes += body.len() as u64;
        if truncated {
            out.note(format!("{url}: body over {cap} bytes; read only the first {cap}"));
        }
        let src = |how| Source {
            url: url.to_string(),
            how,
            last_modified: last_modified.clone(),
        };
        match doc {
            Some(kind) => {
                out.documents += 1;
                if truncated {
                    out.note(format!("{url}: document not read: larger than {cap} bytes"));
                    continue;
                }
                let (text, how) = match kind {
                    DocKind::Pdf => (
                        tokio::task::spawn_blocking({
                            let (max, t) = (limits.max_decompressed, limits.timeout);
                            move || docs::pdf_text(&body, max, t)
                        })
                        .await
                        .unwrap_or_else(|e| Err(format!("reader failed: {e}"))),
                        How::Pdf,
                    ),
                    DocKind::Office => (docs::office_text(&body, limits.max_decompressed), How::Office),
                };
                match text {
                    Ok(t) => {
                        for (a, _) in extract::text_addresses(&t, how) {
                            out.add_address(a, src(how));
                        }
                    }
                    Err(e) => out.note(format!("{url}: document not read: {e}")),
                }
            }
            None => {
                out.pages += 1;
                let text = String::from_utf8_lossy(&body);
                if is_html {
                    let facts = extract::html_page(&text, &url, &limits.idp_hosts);
                    for (a, how) in facts.addresses {
                        out.add_address(a, src(how));
                    }
                    for f in facts.forms {
                        add_form(&mut out, f, src(How::Text));
                    }
                    for l in facts.login_links {
                        let pages = out.login_links.entry(l).or_default();
                        if !pages.contains(&url.to_string()) {
                            pages.push(url.to_string());
                        }
                    }
                    if depth < limits.max_depth {
                        for link in facts.links {
                            enqueue(&mut queue, &mut seen, &hosts, limits, &mut out, link, depth + 1);
                        }
                    } else if !facts.links.is_empty() {
                        out.limited += facts.links.len();
                    }
                } else {
                    for (a, how) in extract::text_addresses(&text, How::Text) {
                        out.add_address(a, src(how));
                    }
                }
            }
        }
    }
    tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "crawl done");
    Ok(out)
}

fn add_form(out: &mut Crawl, f: FormFacts, page: Source) {
    let page = Source { how: How::Text, ..page };
    if let Some(existing) = out
        .forms
        .iter_mut()
        .find(|x| x.action == f.action && x.method == f.method)
    {
        if !existing.pages.contains(&page) {
            existing.pages.push(page);
        }
        if existing.handoff.is_none() {
            existing.handoff = f.handoff;
        }
        return;
    }
    out.forms.push(FoundForm {
        action: f.action,
        method: f.method,
        fields: f.fields,
        handoff: f.handoff,
        pages: vec![page],
    });
}

fn enqueue(
    queue: &mut VecDeque<(Url, usize)>,
    seen: &mut HashSet<String>,
    hosts: &HashSet<String>,
    limits: &Limits,
    out: &mut Crawl,
    url: Url,
    depth: usize,
) {
    let allowed = url.host_str().is_some_and(|h| hosts.contains(&h.to_ascii_lowercase()));
    if !allowed || extract::looks_like_login(&url, &limits.idp_hosts) {
        return;
    }
    if seen.len() >= MAX_QUEUE {
        out.limited += 1;
        return;
    }
    if seen.insert(url.to_string()) {
        queue.push_back((url, depth));
    }
}

async fn wait(last: &mut Option<Instant>, delay: Duration) {
    if let Some(t) = *last {
        let since = t.elapsed();
        if since < delay {
            tokio::time::sleep(delay - since).await;
        }
    }
    *last = Some(Instant::now());
}

/// `Some(robot)`; `None` when the site forbids everything (robots.txt unreachable by a server error).
async fn fetch_robots(
    client: &reqwest::Client,
    url: &Url,
    limits: &Limits,
    out: &mut Crawl,
) -> Option<texting_robots::Robot> {
    let allow_all = || texting_robots::Robot::new(ROBOTS_AGENT, b"").ok();
    let Ok(mut robots_url) = url.join("/robots.txt") else {
        return allow_all();
    };
    // RFC 9309 §2.3.1.2: follow at least five redirects.
    let mut answer = client.get(robots_url.clone()).send().await;
    for _ in 0..5 {
        let next = match &answer {
            Ok(r) if r.status().is_redirection() => r
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| robots_url.join(l).ok()),
            _ => None,
        };
        let Some(next) = next else { break };
        out.requests += 1;
        robots_url = next;
        answer = client.get(robots_url.clone()).send().await;
    }
    match answer {
        Ok(r) if r.status().is_success() => {
            let (body, _) = read_body(r, limits.max_bytes.min(512 * 1024)).await;
            out.bytes += body.len() as u64;
            match texting_robots::Robot::new(ROBOTS_AGENT, &body) {
                Ok(robot) => Some(robot),
                Err(e) => {
                    out.note(format!("{robots_url}: unreadable ({e}); treated as allowing all"));
                    allow_all()
                }
            }
        }
        Ok(r) if r.status().is_server_error() => {
            out.note(format!(
                "{robots_url}: HTTP {}: the site is not crawled",
                r.status().as_u16()
            ));
            None
        }
        Ok(_) => allow_all(),
        Err(e) => {
            out.note(format!("{robots_url}: {e}: the site is not crawled"));
            None
        }
    }
}

/// The body up to `cap` bytes; `true` when there was more.
async fn read_body(mut resp: reqwest::Response, cap: u64) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                let room = (cap as usize).saturating_sub(body.len());
                if c.len() > room {
                    body.extend_from_slice(&c[..room]);
                    return (body, true);
                }
                body.extend_from_slice(&c);
            }
            Ok(None) | Err(_) => return (body, false),
        }
    }
}
