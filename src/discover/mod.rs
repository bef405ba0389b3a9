//! `postcanary discover`: crawl an organisation's sites for every public
//! channel — published e-mail addresses (pages, PDFs, office documents) and
//! HTML forms — compare them with the configured channels, flag look-alike
//! addresses, optionally ask the MX at RCPT time, and print a table, JSON, or
//! `[[channel]]` stubs. Read-only: it never submits a form, never follows a
//! login and never sends a message.

pub mod crawl;
pub mod docs;
pub mod extract;
pub mod lookalike;
pub mod report;

use std::process::ExitCode;
use std::time::Duration;

use clap::ValueEnum;
use url::Url;

use crate::config::{Config, HumanDuration};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Toml,
}

/// The arguments of `postcanary discover`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Start URL of a site to crawl (repeatable).
    #[arg(long = "site", required = true)]
    pub sites: Vec<String>,
    /// Output: a table, a JSON report, or `[[channel]]` stubs for what is unmonitored.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Ask the MX, through this `kind = "mx"` sender of the config, whether each address is accepted (RCPT TO only; nothing is sent).
    #[arg(long = "rcpt-check", value_name = "SENDER")]
    pub rcpt_check: Option<String>,
    /// Another host whose pages may be crawled (repeatable); the sites' own hosts always are.
    #[arg(long = "allow-host")]
    pub allow_hosts: Vec<String>,
    /// A further identity-provider host (and the hosts below it) that marks a login hand-off.
    #[arg(long = "idp-host")]
    pub idp_hosts: Vec<String>,
    /// Most pages and documents requested (redirects and errors count; robots.txt does not).
    #[arg(long, default_value_t = 500)]
    pub max_pages: usize,
    /// Most links followed from a start URL.
    #[arg(long, default_value_t = 5)]
    pub max_depth: usize,
    /// Most bytes read of one response.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    pub max_bytes: u64,
    /// Most bytes read in all.
    #[arg(long, default_value_t = 500 * 1024 * 1024)]
    pub max_total_bytes: u64,
    /// Most bytes a document may decompress to.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_decompressed: u64,
    /// Least time between two requests (a site's Crawl-delay may ask for more).
    #[arg(long, default_value = "500ms")]
    pub delay: HumanDuration,
    /// The page or mailto: URL put in the User-Agent for webmasters: who crawls, and why.
    #[arg(long, default_value = crawl::DEFAULT_CONTACT)]
    pub contact: String,
    /// Limit for one request (and for reading one document).
    #[arg(long, default_value = "20s")]
    pub timeout: HumanDuration,
}

/// The crawl's budget.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_pages: usize,
    pub max_depth: usize,
    pub max_bytes: u64,
    pub max_total_bytes: u64,
    pub max_decompressed: u64,
    pub delay: Duration,
    pub timeout: Duration,
    pub allow_hosts: Vec<String>,
    pub idp_hosts: Vec<String>,
    pub contact: String,
}

impl Args {
    pub fn limits(&self) -> Limits {
        Limits {
            max_pages: self.max_pages,
            max_depth: self.max_depth,
            max_bytes: self.max_bytes,
            max_total_bytes: self.max_total_bytes,
            max_decompressed: self.max_decompressed,
            delay: self.delay.as_duration(),
            timeout: self.timeout.as_duration(),
            allow_hosts: self.allow_hosts.clone(),
            idp_hosts: self.idp_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            contact: self.contact.clone(),
        }
    }
}

const EXIT_FINDINGS: u8 = 1;
const EXIT_USAGE: u8 = 2;

/// Runs the command. Exit 0: crawled, and (with a config) every published
/// channel is probed and every look-alike is probed as bounce/forward;
/// 1: something unmonitored, no longer published, or a look-alike to act
/// on (or the crawl failed); 2: bad arguments or config.
pub async fn run(args: Args, config: Option<Config>) -> ExitCode {
    let mut sites = Vec::new();
    for s in &args.sites {
        match Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => sites.push(u),
            _ => {
                eprintln!("--site {s:?}: not an http(s) URL");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let sender = match (&args.rcpt_check, &config) {
        (None, _) => None,
        (Some(_), None) => {
            eprintln!("--rcpt-check needs the config (-c FILE) that defines the sender");
            return ExitCode::from(EXIT_USAGE);
        }
        (Some(name), Some(c)) => match c.sender(name) {
            Some(s) if s.mx.is_some() => Some(s.clone()),
            Some(_) => {
                eprintln!("--rcpt-check {name}: the sender is not kind = \"mx\"");
                return ExitCode::from(EXIT_USAGE);
            }
            None => {
                eprintln!("--rcpt-check {name}: no [[sender]] of that name");
                return ExitCode::from(EXIT_USAGE);
            }
        },
    };
    let crawl = match crawl::crawl(&sites, &args.limits()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("discover: {e}");
            return ExitCode::from(EXIT_FINDINGS);
        }
    };
    let mut report = report::Report::build(&sites, crawl, config.as_ref());
    if let Some(s) = &sender {
        report.rcpt_check(s).await;
    }
    match args.format {
        Format::Table => print!("{}", report.table()),
        Format::Json => match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("cannot encode the report: {e}");
                return ExitCode::from(EXIT_FINDINGS);
            }
        },
        Format::Toml => print!("{}", report.toml_stubs()),
    }
    if config.is_some() && report.needs_action() {
        ExitCode::from(EXIT_FINDINGS)
    } else {
        ExitCode::SUCCESS
    }
}
