//! The reliability and security proving ground (issue 5): kills at every phase of a backup and of a
//! restore, full disks, concurrent hooks, a live writer, corrupted backups, hostile hook input, a
//! hostile filesystem and secrets in the configuration, one module per scenario. Each scenario is
//! repeated and every case is counted in a [`Tally`](crate::support::cases::Tally); a scenario
//! runs all its cases, records its figures, then fails with the first failures if any case failed.
//! This file holds what several scenarios check (backups complete, `latest` verified, leftovers).
//!
//! - Default mode: bounded (well under three minutes on two cores), part of `cargo test`;
//!   `cargo test --test it reliability::` runs the scenarios alone.
//! - Soak mode: `DUCKSAFE_SOAK=1` multiplies every case count by 10 (`DUCKSAFE_SOAK=N`, N ≥ 2,
//!   by N).
//! - Figures: with `DUCKSAFE_RELIABILITY_REPORT=<path>`, every scenario writes its scenario name,
//!   cases, passed, duration, details and rerun command into that JSON file;
//!   `docs/reliability-report.sh` runs the suite that way and renders `docs/reliability.md`.
//! - Randomness: every scenario draws from its own seeded PRNG (SplitMix64);
//!   `DUCKSAFE_RELIABILITY_SEED` changes the seed, which the report records.
//! - Root: the disk-full scenario mounts small tmpfs filesystems. Without root it is skipped with
//!   a message, except under `CI=true`, where it fails: CI must run it.
//!
//! Kills use the failpoints compiled into the binary (`DUCKSAFE_FAILPOINT=<name>` aborts there,
//! `<name>:sleep=<ms>` pauses there so that the test can SIGKILL it at a known moment,
//! `<name>:wait=<path>` holds it there until the test lets it go) and SIGKILLs at random moments.

mod backup_ids;
mod concurrency;
mod corruption;
mod crash;
mod damaged_database;
mod disk_full;
mod durability;
mod hostile_fs;
mod hostile_input;
mod live_writer;
mod readers;
mod secrets;
mod several_databases;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::support::cases::ensure;
use crate::support::{self, sha256};

use ducksafe::config::VerifyLevel;
use ducksafe::duck::Limits;
use ducksafe::engine::manifest::Manifest;
use ducksafe::engine::store::{Store, LATEST};
use ducksafe::engine::verify;

/// Names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    support::dir_names(dir)
}

/// The main file and every WAL companion of a database, by content.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SourceState {
    main: String,
    wals: Vec<(String, String)>,
}

fn source_state(db: &Path) -> SourceState {
    SourceState {
        main: sha256(db),
        wals: ducksafe::duck::wal_paths(db)
            .into_iter()
            .filter(|w| w.exists())
            .map(|w| (w.display().to_string(), sha256(&w)))
            .collect(),
    }
}

/// Ids of backup files in a backup directory (`<id>.duckdb`, not `latest`, not hidden).
fn backup_ids(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| !n.starts_with('.') && n != LATEST)
        .filter_map(|n| n.strip_suffix(".duckdb").map(str::to_owned))
        .collect()
}

/// Every file under a backup name is complete: it has a manifest for it, and its size and
/// SHA-256 equal the manifest's (and DuckDB opens it). Returns the ids.
fn every_backup_is_complete(dir: &Path) -> Result<Vec<String>, String> {
    let ids = backup_ids(dir);
    for id in &ids {
        let path = dir.join(format!("{id}.duckdb"));
        let meta = fs::symlink_metadata(&path).map_err(|e| format!("{id}: {e}"))?;
        ensure(meta.file_type().is_file(), || {
            format!("`{id}.duckdb` is not a regular file")
        })?;
        let m = Manifest::read(&dir.join(format!("{id}.manifest.json")))
            .map_err(|e| format!("`{id}.duckdb` has no readable manifest: {e}"))?;
        ensure(m.id == *id, || {
            format!("the manifest of `{id}` names `{}`", m.id)
        })?;
        verify::stored(&path, &m, VerifyLevel::Quick, &Limits::default())
            .map_err(|e| format!("a partial or wrong file under the backup name `{id}`: {e}"))?;
    }
    ensure(
        !names(dir)
            .iter()
            .any(|n| !n.starts_with('.') && n.contains(".duckdb.wal")),
        || "a WAL file sits beside a backup".into(),
    )?;
    Ok(ids)
}

/// `latest.duckdb` is a symlink to a complete backup in the directory, and that backup passes a
/// full verification (a scan of every column, fingerprints equal to its manifest's).
fn latest_is_verified(dir: &Path) -> Result<String, String> {
    let link = dir.join(LATEST);
    let meta = fs::symlink_metadata(&link).map_err(|e| format!("no `{LATEST}`: {e}"))?;
    ensure(meta.file_type().is_symlink(), || {
        format!("`{LATEST}` is not a symlink")
    })?;
    let store = Store::open(dir, false).map_err(|e| e.to_string())?;
    let id = store
        .latest_id()
        .ok_or_else(|| format!("`{LATEST}` does not name a backup in the directory"))?;
    let entry = store
        .resolve("latest")
        .map_err(|e| format!("`latest` does not resolve: {e}"))?;
    ensure(entry.id == id, || {
        format!(
            "`{LATEST}` points to `{id}`, which is not a stored backup (`latest` fell back to `{}`)",
            entry.id
        )
    })?;
    verify::stored(
        &store.backup_path(&id),
        &entry.manifest,
        VerifyLevel::Full,
        &Limits::default(),
    )
    .map_err(|e| format!("`latest` ({id}) does not verify: {e}"))?;
    Ok(id)
}

/// Leftovers of an interrupted run in a backup directory: temporary names, and manifests or
/// checksum files whose backup is missing.
fn leftovers(dir: &Path) -> Vec<String> {
    let ids: BTreeSet<String> = backup_ids(dir).into_iter().collect();
    names(dir)
        .into_iter()
        .filter(|n| {
            n.starts_with(ducksafe::files::TEMP_PREFIX)
                || n.strip_suffix(".manifest.json")
                    .or_else(|| n.strip_suffix(".duckdb.sha256"))
                    .is_some_and(|id| !ids.contains(id))
        })
        .collect()
}

/// Every scenario the report lists is a test of this binary under the path it gives, so that the
/// report's rerun commands (`cargo test --test it -- --exact PATH`) run it.
#[test]
fn every_scenario_is_listed_under_its_test_path() {
    let out = support::command(std::env::current_exe().unwrap())
        .args(["--list", "--format", "terse"])
        .output()
        .unwrap();
    let listed = String::from_utf8(out.stdout).unwrap();
    let tests: BTreeSet<&str> = listed
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .collect();
    for (path, scenario) in crate::support::cases::SCENARIOS {
        assert!(tests.contains(path), "{scenario}: no test `{path}`");
    }
}
