//! `postcanary migrate --from sqlite://… --to postgres://…`: copies a SQLite
//! ledger into an empty PostgreSQL one — probes and their evidence,
//! incidents and their timelines (with acknowledgements and escalation
//! steps), the outbox, inbox cursors, DNS baselines, `meta` (the kept token
//! key and the retention marks), watchers' blind spells, daily rollups (per channel and per vantage),
//! run-time silences, the audit log and the per-channel summary
//! (`channel_latest`, `channel_days`) — in one transaction, and compares the
//! row counts of every table before committing. Ids are kept, so pages
//! already queued keep their order and dedup keys.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rusqlite::types::Value;
use tokio_postgres::types::ToSql;

use super::postgres::{pgerr, PostgresStore};
use super::sqlite::SqliteStore;
use super::{StoreError, StoreResult};
use crate::config::ledger::{parse_postgres, LedgerTls};
use crate::config::SecretRef;

/// The arguments of `postcanary migrate`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The SQLite ledger to copy: "sqlite://PATH".
    #[arg(long)]
    pub from: String,
    /// The PostgreSQL ledger to fill (empty): "postgres://USER@HOST[:PORT]/DATABASE".
    #[arg(long)]
    pub to: String,
    /// The PostgreSQL password: "env:NAME" or "file:PATH".
    #[arg(long)]
    pub password: Option<SecretRef>,
    /// "require" (default) or "none" (loopback only).
    #[arg(long, value_parser = parse_tls)]
    pub tls: Option<LedgerTls>,
    /// PEM file of the CA(s) of the server's certificate.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

fn parse_tls(s: &str) -> Result<LedgerTls, String> {
    match s {
        "require" => Ok(LedgerTls::Require),
        "none" => Ok(LedgerTls::None),
        _ => Err("expected \"require\" or \"none\"".into()),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int,
    Bool,
}
use Kind::{Bool, Int, Text};

/// The tables copied, in an order that satisfies the foreign keys, with
/// their columns (SQLite and PostgreSQL share the names).
/// (table, SQLite order, columns).
type Table = (&'static str, &'static str, &'static [(&'static str, Kind)]);

const TABLES: &[Table] = &[
    ("meta", "key", &[("key", Text), ("value", Text)]),
    (
        "probes",
        "rowid",
        &[
            ("id", Text),
            ("token", Text),
            ("channel", Text),
            ("kind", Text),
            ("expect", Text),
            ("inbox", Text),
            ("target", Text),
            ("run_id", Text),
            ("created_at", Int),
            ("sent_at", Int),
            ("deadline", Int),
            ("verdict", Text),
            ("judged_at", Int),
            ("found_in", Text),
            ("found_at", Int),
            ("latency_ms", Int),
            ("detail", Text),
            ("smtp_reply", Text),
            ("fault", Text),
            ("vantage", Text),
            ("handled", Bool),
        ],
    ),
    (
        "probe_events",
        "rowid",
        &[("probe_id", Text), ("at", Int), ("kind", Text), ("detail", Text)],
    ),
    (
        "inbox_cursors",
        "inbox",
        &[("inbox", Text), ("uid_validity", Int), ("last_uid", Int)],
    ),
    (
        "dns_baselines",
        "domain",
        &[("domain", Text), ("snapshot", Text), ("recorded_at", Int)],
    ),
    (
        "incidents",
        "id",
        &[
            ("id", Int),
            ("channel", Text),
            ("dedup_key", Text),
            ("opened_at", Int),
            ("opened_by", Text),
            ("verdict", Text),
            ("detail", Text),
            ("failures", Int),
            ("last_failure_at", Int),
            ("paged", Bool),
            ("last_paged_at", Int),
            ("silenced", Text),
            ("resolved_at", Int),
            ("resolved_by", Text),
            ("acknowledged_at", Int),
            ("acknowledged_by", Text),
            ("escalations", Int),
        ],
    ),
    (
        "incident_events",
        "rowid",
        &[("incident_id", Int), ("at", Int), ("kind", Text), ("detail", Text)],
    ),
    (
        "outbox",
        "id",
        &[
            ("id", Int),
            ("incident_id", Int),
            ("notifier", Text),
            ("event", Text),
            ("dedup_key", Text),
            ("page", Text),
            ("created_at", Int),
            ("state", Text),
            ("attempts", Int),
            ("next_attempt_at", Int),
            ("first_failed_at", Int),
            ("last_error", Text),
            ("fallback_done", Bool),
            ("sent_at", Int),
        ],
    ),
    (
        "watcher_blind",
        "rowid",
        &[
            ("watcher", Text),
            ("inbox", Text),
            ("since", Int),
            ("until", Int),
            ("why", Text),
        ],
    ),
    (
        "vantage_rollups",
        "channel, vantage, day",
        &[
            ("channel", Text),
            ("vantage", Text),
            ("day", Int),
            ("judged", Int),
            ("successful", Int),
            ("errors", Int),
            ("pending", Int),
        ],
    ),
    (
        "rollups",
        "channel, day",
        &[
            ("channel", Text),
            ("day", Int),
            ("judged", Int),
            ("successful", Int),
            ("errors", Int),
            ("pending", Int),
            ("latency_count", Int),
            ("latency_sum", Int),
            ("latency_max", Int),
        ],
    ),
    (
        "silences",
        "id",
        &[
            ("id", Int),
            ("channel", Text),
            ("owner", Text),
            ("from_at", Int),
            ("until", Int),
            ("reason", Text),
            ("created_by", Text),
            ("created_at", Int),
            ("ended_at", Int),
            ("ended_by", Text),
        ],
    ),
    (
        "audit",
        "id",
        &[
            ("id", Int),
            ("at", Int),
            ("actor", Text),
            ("action", Text),
            ("target", Text),
            ("reason", Text),
        ],
    ),
    // Kept by the SQLite ledger's triggers (and pruning leaves them be):
    // copied as they are, not recounted from the probes that are left.
    (
        "channel_latest",
        "channel",
        &[("channel", Text), ("probe_id", Text), ("created_at", Int)],
    ),
    (
        "channel_days",
        "channel, day, verdict",
        &[("channel", Text), ("day", Int), ("verdict", Text), ("n", Int)],
    ),
    (
        "retain_checks",
        "id",
        &[
            ("id", Int),
            ("probe_id", Text),
            ("channel", Text),
            ("age", Text),
            ("age_ms", Int),
            ("due_at", Int),
            ("next_at", Int),
            ("state", Text),
            ("checked_at", Int),
            ("result", Text),
            ("detail", Text),
            ("content_hash", Text),
            ("attempts", Int),
            ("fault_since", Int),
        ],
    ),
];

/// Rows read from SQLite per round.
const BATCH: i64 = 2_000;

/// What was copied: (table, rows), in copy order.
pub type Counts = Vec<(&'static str, i64)>;

fn param(v: Value, kind: Kind, table: &str, col: &str) -> StoreResult<Box<dyn ToSql + Sync + Send>> {
    let bad = || StoreError(format!("{table}.{col}: unexpected value type in the SQLite ledger"));
    Ok(match (kind, v) {
        (Text, Value::Null) => Box::new(None::<String>),
        (Text, Value::Text(s)) => Box::new(Some(s)),
        (Int, Value::Null) => Box::new(None::<i64>),
        (Int, Value::Integer(i)) => Box::new(Some(i)),
        (Bool, Value::Null) => Box::new(None::<bool>),
        (Bool, Value::Integer(i)) => Box::new(Some(i != 0)),
        _ => return Err(bad()),
    })
}

/// Reads one batch of a table from SQLite (on the blocking pool).
async fn read_batch(
    path: PathBuf,
    table: &'static str,
    order: &'static str,
    offset: i64,
) -> StoreResult<Vec<Vec<Value>>> {
    tokio::task::spawn_blocking(move || -> StoreResult<Vec<Vec<Value>>> {
        let conn = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        let cols = columns(table).join(", ");
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {cols} FROM {table} ORDER BY {order} LIMIT ?1 OFFSET ?2"
            ))
            .map_err(|e| StoreError(e.to_string()))?;
        let n = columns(table).len();
        let rows = stmt
            .query_map(rusqlite::params![BATCH, offset], |r| {
                (0..n)
                    .map(|i| r.get::<_, Value>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| StoreError(e.to_string()))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| StoreError(e.to_string()))
    })
    .await
    .map_err(|e| StoreError(e.to_string()))?
}

fn columns(table: &str) -> Vec<&'static str> {
    TABLES
        .iter()
        .find(|t| t.0 == table)
        .map(|t| t.2.iter().map(|c| c.0).collect())
        .unwrap_or_default()
}

async fn sqlite_count(path: PathBuf, table: &'static str) -> StoreResult<i64> {
    tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StoreError(e.to_string()))?;
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .map_err(|e| StoreError(e.to_string()))
    })
    .await
    .map_err(|e| StoreError(e.to_string()))?
}

/// Copies the SQLite ledger at `from` into `to`, which must hold no probes,
/// incidents, pages, silences or audit rows yet. All or nothing: one transaction, committed only
/// when every table's count matches.
pub async fn sqlite_to_postgres(from: &Path, to: &PostgresStore) -> StoreResult<Counts> {
    if !from.exists() {
        return Err(StoreError(format!("{} does not exist", from.display())));
    }
    // Bring the source's schema up to date (what the daemon would do on start).
    drop(SqliteStore::open(from).await?);
    let mut client = to.client().await?;
    let tx = client.transaction().await.map_err(pgerr)?;
    for table in ["probes", "incidents", "outbox", "silences", "audit"] {
        let r = tx
            .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
            .await
            .map_err(pgerr)?;
        let n: i64 = r.try_get(0).map_err(pgerr)?;
        if n > 0 {
            return Err(StoreError(format!(
                "the target ledger already holds {n} row(s) in {table}; migrate into an empty database"
            )));
        }
    }
    // The token key and other meta the target may have settled on its own are replaced.
    tx.execute("DELETE FROM meta", &[]).await.map_err(pgerr)?;
    tx.execute("DELETE FROM inbox_cursors", &[]).await.map_err(pgerr)?;
    tx.execute("DELETE FROM dns_baselines", &[]).await.map_err(pgerr)?;
    // What a daemon may have written on a target without probes: replaced too.
    for table in [
        "watcher_blind",
        "rollups",
        "vantage_rollups",
        "channel_latest",
        "channel_days",
    ] {
        tx.execute(&format!("DELETE FROM {table}"), &[]).await.map_err(pgerr)?;
    }
    let mut counts = Counts::new();
    for (table, order, cols) in TABLES {
        let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
        let placeholders: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
        let stmt = tx
            .prepare(&format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                names.join(", "),
                placeholders.join(", ")
            ))
            .await
            .map_err(pgerr)?;
        let mut offset = 0;
        loop {
            let rows = read_batch(from.to_path_buf(), table, order, offset).await?;
            if rows.is_empty() {
                break;
            }
            offset += i64::try_from(rows.len()).unwrap_or(BATCH);
            for row in rows {
                let params = row
                    .into_iter()
                    .zip(cols.iter())
                    .map(|(v, (col, kind))| param(v, *kind, table, col))
                    .collect::<StoreResult<Vec<_>>>()?;
                let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
                tx.execute(&stmt, &refs).await.map_err(pgerr)?;
            }
        }
        let source = sqlite_count(from.to_path_buf(), table).await?;
        let r = tx
            .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
            .await
            .map_err(pgerr)?;
        let copied: i64 = r.try_get(0).map_err(pgerr)?;
        if copied != source {
            return Err(StoreError(format!(
                "{table}: {source} row(s) in SQLite but {copied} in PostgreSQL; nothing was committed"
            )));
        }
        counts.push((table, copied));
    }
    // New incidents and pages continue after the copied ids.
    for table in ["incidents", "outbox", "silences", "audit", "retain_checks"] {
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
            ),
            &[],
        )
        .await
        .map_err(pgerr)?;
    }
    tx.commit().await.map_err(pgerr)?;
    Ok(counts)
}

/// `postcanary migrate`: 0 when copied and verified, 1 when not, 2 for bad arguments.
pub async fn run(args: Args) -> ExitCode {
    let Some(path) = args
        .from
        .strip_prefix("sqlite://")
        .or_else(|| args.from.strip_prefix("sqlite:"))
        .filter(|p| !p.is_empty())
    else {
        eprintln!("--from: expected \"sqlite://PATH\"");
        return ExitCode::from(2);
    };
    let password = match args.password.as_ref().map(|r| r.resolve(Path::new("."))) {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            eprintln!("--password: {e}");
            return ExitCode::from(2);
        }
        None => None,
    };
    let target = match parse_postgres(&args.to, password, args.tls, args.ca_file.clone(), Some(2)) {
        Ok(t) => t,
        Err((key, msg)) => {
            eprintln!("--to ({key}): {msg}");
            return ExitCode::from(2);
        }
    };
    let store = match PostgresStore::open(&target).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot open the target: {e}");
            return ExitCode::from(1);
        }
    };
    match sqlite_to_postgres(Path::new(path), &store).await {
        Ok(counts) => {
            println!("copied {path} into {} and verified the counts:", target.display());
            for (table, n) in counts {
                println!("  {table:<16} {n}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("migrate: {e}");
            ExitCode::from(1)
        }
    }
}
