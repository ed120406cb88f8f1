//! `cronflow audit verify`: checks the audit trail's hash chain (the rule is
//! `cronflow_jobs::domain::audit_chain`) in the database or in an exported NDJSON file.

use crate::Settings;
use anyhow::Context;
use cronflow_jobs::{
    Store,
    domain::{
        SecretKey,
        audit_chain::{Verdict, Verifier},
    },
};
use secrecy::ExposeSecret;
use serde_json::Value;
use std::{
    io::{BufRead, BufReader},
    path::Path,
};

/// Checks the chain in the database `settings` name, without migrating or writing it.
pub async fn verify_database(settings: &Settings) -> anyhow::Result<Verdict> {
    // Verifying opens no signing secret: any key serves.
    let key = SecretKey::parse(&SecretKey::generate_text()).context("cannot make a key")?;
    let url = settings.database_url.expose_secret();
    let store = Store::connect(url, key)
        .await
        .context("cannot open the database")?;
    let verdict = store
        .verify_audit()
        .await
        .context("cannot read the audit trail (is the database migrated by this version?)");
    store.close().await;
    verdict
}

/// Checks the chain in an NDJSON file exported from `GET /v1/audit`: its entries in the
/// order written, the first taken as the start (its `prev_hash` as given, unless it is
/// entry 1); heartbeat lines are skipped.
pub fn verify_file(path: &Path) -> anyhow::Result<Verdict> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut verifier: Option<Verifier> = None;
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: Value = serde_json::from_str(&line)
            .with_context(|| format!("{} line {} is not JSON", path.display(), n + 1))?;
        if entry.get("heartbeat").is_some() {
            continue;
        }
        verifier
            .get_or_insert_with(|| Verifier::from_first(&entry))
            .push(&entry);
    }
    let verifier = verifier.with_context(|| format!("{} holds no audit entry", path.display()))?;
    Ok(verifier.verdict())
}
