//! The store contract suite (`postcanary::ledger::contract`) on every backend.

use std::sync::Arc;

use postcanary::ledger::sqlite::SqliteStore;
use postcanary::ledger::Store;

#[tokio::test]
async fn sqlite_in_memory_meets_the_store_contract() {
    let s: postcanary::ledger::DynStore = Arc::new(SqliteStore::in_memory().unwrap());
    postcanary::ledger::contract::run_all(s.clone()).await;
    postcanary::ledger::contract::run_reports(s.clone()).await;
    postcanary::ledger::contract::run_ops(s).await;
    postcanary::ledger::contract::run_paging(Arc::new(SqliteStore::in_memory().unwrap())).await;
    postcanary::ledger::contract::run_retain(Arc::new(SqliteStore::in_memory().unwrap())).await;
}

#[tokio::test]
async fn sqlite_file_meets_the_store_contract_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/ledger.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let store: postcanary::ledger::DynStore = Arc::new(store);
    postcanary::ledger::contract::run_all(store.clone()).await;
    postcanary::ledger::contract::run_ops(store).await;
    // Reopening runs no migration twice and keeps the data.
    let again = SqliteStore::open(&path).await.unwrap();
    assert!(again.probe_by_token("pc-tok-1").await.unwrap().is_some());
}

#[tokio::test]
async fn sqlite_counts_probes_per_vantage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let open = |v: Option<&'static str>| {
        let path = path.clone();
        async move {
            let s: postcanary::ledger::DynStore = Arc::new(SqliteStore::open(&path).await.unwrap().with_vantage(v));
            s
        }
    };
    let plain = open(None).await;
    postcanary::ledger::contract::run_vantages(open(Some("east")).await, open(Some("west")).await, plain).await;
}
