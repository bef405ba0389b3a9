//! The command line: `validate`, `check`, `run`, `dns`, `inspect`, `demo`, `report`, `evidence`. Exit codes: 0 success,
//! 1 a failing verdict (check) or a runtime failure, 2 an invalid config.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::config::{self, Config, ConfigErrors};
use crate::engine::Engine;
use crate::ledger::ProbeRecord;
use crate::verdict::human_ms;

#[derive(Parser, Debug)]
#[command(
    name = "postcanary",
    version,
    about = "Synthetic end-to-end delivery prober for public mail and form channels"
)]
pub struct Cli {
    /// Config file [default: $POSTCANARY_CONFIG or ./postcanary.toml]
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse and check the config and print the channels.
    Validate {
        /// Check everything but secret values: `env:` variables and `file:`
        /// files are not read (for the CI of a config repository).
        #[arg(long)]
        offline: bool,
    },
    /// Probe the selected channels once, now, and wait for the verdicts.
    Check {
        /// Channel id to probe (repeatable); all channels when omitted.
        #[arg(long = "channel")]
        channels: Vec<String>,
        /// Print one JSON object per probe instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the daemon: scheduler, inbox watchers, deadline sweeper.
    Run,
    /// The whole system on loopback with nothing installed: sandbox mail
    /// servers, a form site and a webhook receiver, probed by the real
    /// daemon while the seed incident replays (about two minutes).
    Demo {
        /// Address of the status page.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Also print the daemon's log (as RUST_LOG does); otherwise only the story and the pages.
        #[arg(long)]
        verbose: bool,
    },
    /// What postcanary reads in raw messages: tokens (and whether each
    /// verifies), bounce facts, auto-reply, hops with TLS, authentication
    /// results.
    Inspect {
        /// Print one JSON object per message instead of text.
        #[arg(long)]
        json: bool,
        /// Raw messages (RFC 5322); `-` for stdin.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the config file (for editors such as Taplo
    /// / Even Better TOML); the committed copy is docs/postcanary.schema.json.
    Schema,
    /// Show the DNS routing records of every probed domain against the
    /// accepted baseline; `--accept` makes the current records the baseline.
    Dns {
        /// Domain whose current records to accept (repeatable).
        #[arg(long = "accept")]
        accept: Vec<String>,
    },
    /// Crawl sites for every published address and form, compare them with
    /// the config (-c), flag look-alike addresses; read-only.
    Discover(crate::discover::Args),
    /// Copy a SQLite ledger into an empty PostgreSQL one and verify the counts.
    Migrate(crate::ledger::migrate::Args),
    /// Availability, incidents (time to detect, acknowledge, resolve), pages
    /// and watchers' blind spells per channel and owner, from the ledger
    /// alone (the daemon need not run).
    Report(crate::report::Args),
    /// The complete record of one incident: probes, pages, timeline, resolution.
    Evidence(crate::report::evidence::Args),
    /// Run the ledger's retention once, now (the daemon does it daily):
    /// roll up days, slim old successes, prune by [ledger] keep_probes and
    /// keep_rollups.
    Prune,
}

const EXIT_FAILED: u8 = 1;
const EXIT_CONFIG: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run | Command::Demo { .. }) {
        // A command whose output is piped into `head` ends quietly when the
        // reader goes away, as every Unix tool does, instead of panicking.
        restore_sigpipe();
    }
    // `check` and `validate` print their results on stdout; failing verdicts
    // are results there, not log noise. The daemon logs them.
    let default_level = match cli.command {
        Command::Run => "info",
        _ => "error",
    };
    if let Command::Demo { listen, verbose } = &cli.command {
        // The demo writes its own config; it needs none. Its story and the
        // pages are its output; the log only when asked (--verbose or RUST_LOG).
        init_logging(cli.log_format, if *verbose { "info" } else { "off" }, None);
        return with_runtime(async move {
            match crate::demo::run(listen).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("demo: {e}");
                    ExitCode::from(EXIT_FAILED)
                }
            }
        });
    }
    if let Command::Discover(args) = &cli.command {
        // The config is optional here: only an explicit -c is compared with.
        init_logging(cli.log_format, "warn", None);
        let config = match &cli.config {
            Some(p) => match Config::load(p) {
                Ok(c) => Some(c),
                Err(errors) => {
                    report_config_errors(&errors);
                    return ExitCode::from(EXIT_CONFIG);
                }
            },
            None => None,
        };
        return with_runtime(crate::discover::run(args.clone(), config));
    }
    if let Command::Migrate(args) = &cli.command {
        init_logging(cli.log_format, "warn", None);
        return with_runtime(crate::ledger::migrate::run(args.clone()));
    }
    if let Command::Inspect { json, files } = &cli.command {
        init_logging(cli.log_format, "error", None);
        return inspect(cli.config.clone(), files, *json);
    }
    if let Command::Schema = &cli.command {
        // Needs no config: the schema comes from the config types.
        return match serde_json::to_string_pretty(&config::config_schema()) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("schema: {e}");
                ExitCode::from(EXIT_FAILED)
            }
        };
    }
    let path = config::default_path(cli.config.clone());
    let loaded = match cli.command {
        Command::Validate { offline: true } => Config::load_offline(&path),
        // Reports read the ledger only: they need no secret but the ledger's
        // own (a PostgreSQL password).
        Command::Report(_) | Command::Evidence(_) | Command::Prune => Config::load_for_ledger(&path),
        _ => Config::load(&path),
    };
    let config = match loaded {
        Ok(c) => c,
        Err(errors) => {
            init_logging(cli.log_format, default_level, None);
            report_config_errors(&errors);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Telemetry is set up before the runtime starts: its exporters run on their own threads.
    let (telemetry, tracer) = match (&cli.command, &config.telemetry) {
        (Command::Run | Command::Check { .. }, Some(t)) => match crate::telemetry::export::Telemetry::init(t) {
            Ok((tel, tracer)) => (Some(tel), Some(tracer)),
            Err(e) => {
                eprintln!("{}: [telemetry]: {e}", config.path.display());
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        _ => (None, None),
    };
    init_logging(cli.log_format, default_level, tracer);
    let code = match cli.command {
        Command::Validate { offline } => {
            print_channels(&config);
            if offline {
                println!("(offline: secret references checked for their form only; none was read)");
            }
            ExitCode::SUCCESS
        }
        Command::Check { channels, json } => with_runtime(check(config, channels, json)),
        Command::Run => with_runtime(run(config)),
        Command::Dns { accept } => with_runtime(dns(config, accept)),
        Command::Report(args) => with_runtime(crate::report::run(config, args)),
        Command::Evidence(args) => with_runtime(crate::report::evidence::run(config, args)),
        Command::Prune => with_runtime(prune(config)),
        Command::Demo { .. }
        | Command::Discover(_)
        | Command::Inspect { .. }
        | Command::Schema
        | Command::Migrate(_) => ExitCode::SUCCESS,
    };
    if let Some(t) = telemetry {
        t.shutdown();
    }
    code
}

/// Dependencies whose debug and trace output may carry credentials or message content.
const QUIET_DEPENDENCIES: &[&str] = &[
    "async_imap",
    "imap_proto",
    "lettre",
    "rustls",
    "tokio_rustls",
    "hyper",
    "hyper_util",
    "reqwest",
    "h2",
    "mail_parser",
    "hickory_proto",
    "hickory_resolver",
    "opentelemetry_otlp",
];
/// `postcanary inspect`: the config (for the token key) is optional; given
/// with `-c` it must be valid, found by default it is used when it loads.
fn inspect(explicit: Option<PathBuf>, files: &[PathBuf], json: bool) -> ExitCode {
    let config = match explicit {
        Some(p) => match Config::load(&p) {
            Ok(c) => Some(c),
            Err(errors) => {
                report_config_errors(&errors);
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => {
            let p = config::default_path(None);
            if p.exists() {
                match Config::load(&p) {
                    Ok(c) => Some(c),
                    Err(_) => {
                        eprintln!(
                            "warning: {} does not load; token keys are unknown (see `postcanary validate`)",
                            p.display()
                        );
                        None
                    }
                }
            } else {
                None
            }
        }
    };
    ExitCode::from(crate::inspect::run(config.as_ref(), files, json))
}

fn init_logging(format: LogFormat, default_level: &str, tracer: Option<opentelemetry_sdk::trace::Tracer>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Protocol libraries write their conversations at debug/trace level —
    // IMAP LOGIN and SMTP AUTH lines included. Whatever RUST_LOG asks, they
    // never speak below info.
    for quiet in QUIET_DEPENDENCIES {
        if let Ok(d) = format!("{quiet}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = match format {
        LogFormat::Human => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let otel = tracer.map(|t| tracing_opentelemetry::layer().with_tracer(t));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
}

fn report_config_errors(errors: &ConfigErrors) {
    eprintln!("invalid config:");
    for e in &errors.0 {
        eprintln!("  {e}");
    }
}

/// `postcanary dns`: exit 0 when every domain is as accepted, 1 when one
/// differs or cannot be read.
async fn dns(config: Config, accept: Vec<String>) -> ExitCode {
    let Some(cfg) = config.dns.clone() else {
        eprintln!("{}: no [dns] table: DNS drift watching is off", config.path.display());
        return ExitCode::from(EXIT_CONFIG);
    };
    let store = match crate::ledger::backend::open(&config.ledger.backend).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot open the ledger: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let resolver = match crate::drift::resolver(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot set up DNS resolution: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let domains = crate::drift::domains(&config);
    for a in &accept {
        if !domains.iter().any(|d| d.eq_ignore_ascii_case(a)) {
            eprintln!("no mail channel sends to {a:?}; probed domains: {}", domains.join(", "));
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let mut all_same = true;
    for domain in domains {
        let snap = match resolver.snapshot(&domain).await {
            Ok(s) => s,
            Err(e) => {
                println!("{domain}: no answer: {e}");
                all_same = false;
                continue;
            }
        };
        if accept.iter().any(|a| a.eq_ignore_ascii_case(&domain)) {
            let json = serde_json::to_string(&snap).unwrap_or_default();
            if let Err(e) = store
                .set_dns_baseline(&domain, &json, crate::verdict::now_millis())
                .await
            {
                eprintln!("cannot write the ledger: {e}");
                return ExitCode::from(EXIT_FAILED);
            }
            println!("{domain}: accepted the current records as the baseline (the daemon resolves its incident on its next look)");
            continue;
        }
        match crate::drift::compare(&store, &snap).await {
            Ok(crate::drift::Look::Recorded(_)) => println!("{domain}: no baseline yet; recorded the current records"),
            Ok(crate::drift::Look::Unchanged) => println!("{domain}: as accepted"),
            Ok(crate::drift::Look::Changed(changes)) => {
                all_same = false;
                println!("{domain}: CHANGED");
                for c in changes {
                    println!("  {c}");
                }
            }
            Err(e) => {
                eprintln!("cannot read the ledger: {e}");
                return ExitCode::from(EXIT_FAILED);
            }
        }
        println!(
            "  MX {}",
            if snap.mx.is_empty() {
                "(none)".to_string()
            } else {
                snap.mx.join(", ")
            }
        );
        for (what, v) in [("SPF", &snap.spf), ("DMARC", &snap.dmarc), ("MTA-STS", &snap.mta_sts)] {
            println!("  {what} {}", v.as_deref().unwrap_or("(none)"));
        }
    }
    if all_same {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

/// `postcanary prune`: one retention run, now.
async fn prune(config: Config) -> ExitCode {
    let store = match crate::report::open_existing(&config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match crate::retention::run_once(&store, &config.ledger, crate::verdict::now_millis()).await {
        Ok(s) => {
            println!(
                "removed {} probe(s), kept {} older one(s) for incidents, slimmed {} success(es), removed {} rollup(s)",
                s.probes_removed, s.probes_kept_for_incidents, s.probes_slimmed, s.rollups_removed
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("retention failed: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn with_runtime(fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn print_channels(config: &Config) {
    println!(
        "{} is valid: {} channel(s), {} sender(s), {} inbox(es)",
        config.path.display(),
        config.channels.len(),
        config.senders.len(),
        config.inboxes.len()
    );
    let rows: Vec<Vec<String>> = config
        .channels
        .iter()
        .map(|c| {
            let target = match &c.kind {
                config::ChannelKind::Mail { to, via } => format!("{to} via {via}"),
                config::ChannelKind::Form { steps } => format!("{} ({} steps)", c.kind.target(), steps.len()),
            };
            vec![
                c.id.clone(),
                c.kind.name().to_string(),
                target,
                c.expect.as_str().to_string(),
                c.inbox.clone().unwrap_or_else(|| "-".into()),
                c.schedule.to_string(),
                config::values::format_duration(c.deadline),
                c.owner.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "CHANNEL", "KIND", "TARGET", "EXPECT", "INBOX", "SCHEDULE", "DEADLINE", "OWNER",
        ],
        &rows,
    );
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// One line of `check --json`.
#[derive(Serialize)]
struct CheckLine<'a> {
    channel: &'a str,
    token: &'a str,
    verdict: &'a str,
    latency_ms: Option<i64>,
    detail: &'a str,
    smtp_reply: Option<&'a str>,
}

async fn check(config: Config, selected: Vec<String>, json: bool) -> ExitCode {
    let unknown: Vec<&String> = selected.iter().filter(|id| config.channel(id).is_none()).collect();
    if !unknown.is_empty() {
        for id in unknown {
            eprintln!("{}: no channel with id {id:?}", config.path.display());
        }
        return ExitCode::from(EXIT_CONFIG);
    }
    let channels: Vec<config::Channel> = if selected.is_empty() {
        config.channels.clone()
    } else {
        config
            .channels
            .iter()
            .filter(|c| selected.contains(&c.id))
            .cloned()
            .collect()
    };
    if channels.is_empty() {
        eprintln!("{}: no channels to check", config.path.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    let engine = match Engine::start(config).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot start: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    // Give the watchers a moment to connect so the first arrival is seen by IDLE;
    // the catch-up after connecting would find it anyway.
    if !engine.wait_watchers_connected(Duration::from_secs(10)).await {
        for (inbox, state) in engine.watcher_states() {
            if !state.is_connected() {
                eprintln!("warning: inbox {inbox} is not connected yet ({state:?})");
            }
        }
    }
    let result = engine.check(&channels).await;
    engine.stop().await;
    let probes = match result {
        Ok(p) => p,
        Err(e) => {
            eprintln!("check failed: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    print_probes(&probes, json);
    if probes.iter().all(|p| p.verdict.is_success()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

fn print_probes(probes: &[ProbeRecord], json: bool) {
    if json {
        for p in probes {
            let line = CheckLine {
                channel: &p.channel,
                token: &p.token,
                verdict: p.verdict.as_str(),
                latency_ms: p.latency_ms,
                detail: p.detail.as_deref().unwrap_or(""),
                smtp_reply: p.smtp_reply.as_deref(),
            };
            match serde_json::to_string(&line) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("cannot encode result for {}: {e}", p.channel),
            }
        }
        return;
    }
    let rows: Vec<Vec<String>> = probes
        .iter()
        .map(|p| {
            vec![
                p.channel.clone(),
                p.verdict.to_string(),
                p.latency_ms.map(human_ms).unwrap_or_else(|| "-".into()),
                p.detail.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&["CHANNEL", "VERDICT", "LATENCY", "DETAIL"], &rows);
}

async fn run(config: Config) -> ExitCode {
    if config.ledger.ha.is_some() {
        return crate::ha::run(config, wait_for_signal(None)).await;
    }
    let mut engine = match Engine::start(config).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match crate::outbox::RealDelivery::new(std::sync::Arc::clone(&engine.config)) {
        Ok(d) => engine.start_paging(std::sync::Arc::new(d)),
        Err(e) => {
            tracing::error!(error = %e, "cannot start paging");
            engine.stop().await;
            return ExitCode::from(EXIT_FAILED);
        }
    }
    if let Err(e) = crate::server::start(&mut engine).await {
        tracing::error!(error = %e, "cannot start the HTTP server");
        engine.stop().await;
        return ExitCode::from(EXIT_FAILED);
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut verdicts = engine.verdicts.subscribe();
    tokio::spawn(async move {
        loop {
            match verdicts.recv().await {
                Ok(v) if v.verdict.is_success() => {
                    tracing::info!(channel = %v.channel, verdict = %v.verdict, detail = %v.detail, "verdict")
                }
                Ok(v) => tracing::warn!(channel = %v.channel, verdict = %v.verdict, detail = %v.detail, "verdict"),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "verdict log fell behind; see the ledger")
                }
                Err(_) => break,
            }
        }
    });
    let reloader = engine.reloader();
    tokio::spawn(async move {
        wait_for_signal(Some(reloader)).await;
        let _ = stop_tx.send(true);
    });
    tracing::info!(run_id = %engine.run_id, channels = engine.config.channels.len(), inboxes = engine.config.inboxes.len(), "postcanary running");
    engine.run_scheduler(stop_rx).await;
    engine.stop().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Waits for SIGTERM or SIGINT; each SIGHUP in between reloads the config
/// (validated first; on errors the running config stays). Under `[ledger] ha`
/// the engine comes and goes with the lease, so a SIGHUP there only says
/// how to reload (`POST /api/reload` on the active instance, or a restart).
pub(crate) async fn wait_for_signal(reloader: Option<crate::engine::Reloader>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(mut term), Ok(mut int), Ok(mut hup)) => loop {
                tokio::select! {
                    _ = term.recv() => { tracing::info!("SIGTERM received"); return; }
                    _ = int.recv() => { tracing::info!("SIGINT received"); return; }
                    _ = hup.recv() => {
                        let Some(reloader) = &reloader else {
                            tracing::warn!("SIGHUP received: with [ledger] ha, reload through POST /api/reload on the active instance, or restart this one");
                            continue;
                        };
                        tracing::info!("SIGHUP received: reloading the config");
                        let status = reloader.reload(None, "SIGHUP").await;
                        if !status.ok {
                            tracing::error!(errors = status.errors.len(), "reload refused; still running the previous config");
                        }
                    }
                }
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reloader;
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Sets SIGPIPE back to its default action (Rust ignores it at start-up).
fn restore_sigpipe() {
    // SAFETY: `signal` with SIG_DFL installs no handler code; it is called
    // before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
