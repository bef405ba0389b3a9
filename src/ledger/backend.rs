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
