//! Opens the backend `[ledger]` names.

use std::sync::Arc;

use crate::config::LedgerBackend;

use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::{DynStore, StoreResult};

/// Opens the configured ledger.
pub async fn open(backend: &LedgerBackend) -> StoreResult<DynStore> {
    match backend {
        LedgerBackend::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path).await?)),
        LedgerBackend::Postgres(pg) => Ok(Arc::new(PostgresStore::open(pg).await?)),
    }
}

/// Opens the configured ledger for the prober of `vantage` (`[vantage]
/// name`): its probes carry the name, and on PostgreSQL its sweeper sees
/// only its own probes.
pub async fn open_as(backend: &LedgerBackend, vantage: Option<&str>) -> StoreResult<DynStore> {
    match backend {
        LedgerBackend::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path).await?.with_vantage(vantage))),
        LedgerBackend::Postgres(pg) => Ok(Arc::new(PostgresStore::open(pg).await?.with_vantage(vantage))),
    }
}
