//! The backup, start to finish. Each step is a module of its own; this file is their order:
//!
//! 1. [`lock`](super::lock): take the backup directory (one ducksafe at a time), then a shared
//!    lock on the database (no writer can start; a writer already in is refused at once);
//! 2. [`store`](super::store): remove what an interrupted run left behind;
//! 3. [`space`](super::space): refuse before writing a byte when the copy cannot fit;
//! 4. [`snapshot`](super::snapshot): copy to a temporary name, fold the WAL in, fsync, read back;
//! 5. [`verify`](super::verify): open the copy, compare it with the source;
//! 6. [`manifest`](super::manifest) and [`store`](super::store): publish (manifest, sidecar,
//!    no-replace rename, directory fsync), then swap `latest`;
//! 7. [`retention`](super::retention): only now, rotate old backups.
//!
//! Invariant: a failure at any step before 6 leaves the backup directory as it was (the
//! temporary file is removed by its guard) and never touches `latest` or an earlier backup.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::lock::SourceLock;
use super::manifest::{Manifest, SourceInfo, Verification};
use super::retention::{self, Candidate, Plan, Policy};
use super::store::{Inventory, Store};
use super::{identity, snapshot, space, verify};
use crate::config::{Settings, VerifyLevel};
use crate::duck;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::files;
use crate::protocol::{Deleted, RotationReport, SpaceReport};

/// What a backup did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub manifest: Manifest,
    pub path: PathBuf,
    pub rotation: RotationReport,
    pub space: SpaceReport,
    pub warnings: Vec<String>,
    /// Leftovers of interrupted backups that were removed first (file names).
    pub cleaned: Vec<String>,
    /// Interrupted restores that were completed first (one line each).
    pub recovered: Vec<String>,
}

/// What a dry run found: nothing was written.
#[derive(Debug, Clone)]
pub struct DryRun {
    pub would_create: String,
    pub space: SpaceReport,
    pub rotation: RotationReport,
    pub warnings: Vec<String>,
}

/// The retention policy of a configuration.
pub fn policy(settings: &Settings) -> Policy {
    Policy {
        keep_last: settings.config.backup_keep_last,
        max_age_days: settings.config.backup_retention_days,
        max_total_bytes: settings.config.backup_max_total_bytes,
    }
}

/// DuckDB limits from the configuration.
pub fn limits(settings: &Settings) -> duck::Limits {
    duck::Limits {
        memory_limit: settings.config.duckdb_memory_limit.clone(),
        threads: settings.config.duckdb_threads,
    }
}

/// Checks that the database exists and is a DuckDB file (not reached through a symlink),
/// without opening it in DuckDB.
pub fn check_database(settings: &Settings) -> Result<()> {
    identity::database_path(settings)?;
    let path = &settings.db_path;
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(Error::DatabaseInvalid {
                path: path.clone(),
                why: "it is not a regular file".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::DatabaseNotFound { path: path.clone() })
        }
        Err(e) => return Err(Error::io("stat database", path, e)),
    }
    duck::check_header(path)
        .map(drop)
        .map_err(|e| Error::DatabaseInvalid {
            path: path.clone(),
            why: e.to_string(),
        })
}

/// Candidates for retention from an inventory; `fresh` names the backup this run just made.
pub fn candidates(store: &Store, inv: &Inventory, fresh: Option<&str>) -> Result<Vec<Candidate>> {
    let latest = store.latest_id();
    // The backup this run just made is the last one made: no need to read the record again.
    let last_made = match fresh {
        Some(id) => Some(id.to_owned()),
        None => store.last_made(inv)?,
    };
    let in_use = super::lease::live(store.dir()).map(|l| l.backup_id);
    Ok(inv
        .backups
        .iter()
        .map(|b| Candidate {
            id: b.id.clone(),
            created_at: b.manifest.created_at,
            bytes: b.file_bytes.unwrap_or(b.manifest.bytes),
            pinned: b.manifest.pinned,
            verified: !b.manifest.verification.checks.is_empty(),
            fresh: fresh == Some(b.id.as_str()),
            proven: b.manifest.verification.fully_verified(),
            latest: latest.as_deref() == Some(b.id.as_str()),
            last_made: last_made.as_deref() == Some(b.id.as_str()),
            in_use: in_use.as_deref() == Some(b.id.as_str()),
        })
        .collect())
}

/// What an operator must know about a backup directory before trusting its order: backups
/// dated in the future (a clock that was wrong), and a `latest.duckdb` that names no backup.
pub fn inventory_warnings(store: &Store, inv: &Inventory, now: DateTime<Utc>) -> Vec<String> {
    let mut warnings = Vec::new();
    for b in &inv.backups {
        if b.manifest.created_at > now + chrono::Duration::minutes(5) {
            warnings.push(format!(
                "backup `{}` is dated {}, in the future: the clock was wrong when it was taken (or is wrong now). Rotation orders backups by date, so it counts as newer than every backup made since and outlives them; if it is not a state you need, delete it with `ducksafe delete {}`",
                b.id,
                b.manifest.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                b.id
            ));
        }
    }
    if let Some(target) = store.dangling_latest(inv) {
        warnings.push(format!(
            "`{}` points to `{target}`, which is not a backup here (deleted by hand?): `restore latest` refuses until the next backup repoints it; name a backup id instead (`ducksafe list`)",
            store.latest_path().display()
        ));
    }
    warnings
}

/// Turns a plan into the report's shape.
pub fn rotation_report(plan: &Plan) -> RotationReport {
    RotationReport {
        kept: plan.kept().map(|d| d.id.clone()).collect(),
        deleted: plan
            .deletions()
            .map(|d| Deleted {
                id: d.id.clone(),
                bytes: d.bytes,
                reason: d.reason.describe(),
            })
            .collect(),
    }
}

/// Applies a plan's deletions. Returns what was deleted; a deletion that fails becomes a
/// warning (the new backup is already safe, and the next run tries again).
pub fn apply_plan(store: &Store, plan: &Plan, warnings: &mut Vec<String>) -> RotationReport {
    let mut report = rotation_report(plan);
    report.deleted.retain(|d| {
        failpoint::hit("rotation.deleting");
        match store.delete(&d.id) {
            Ok(()) => true,
            Err(e) => {
                warnings.push(format!("could not delete old backup `{}`: {e}", d.id));
                false
            }
        }
    });
    report
}

/// Plans a backup without writing anything.
pub fn dry_run(settings: &Settings, now: DateTime<Utc>) -> Result<DryRun> {
    check_database(settings)?;
    let mut warnings = Vec::new();
    // Refuse a writer now rather than pretend the real run would succeed.
    let source = SourceLock::acquire(&settings.db_path)?;
    let needed = source_bytes(&source, &snapshot::present_wals(&settings.db_path));
    drop(source);
    let dir = &settings.backup_dir;
    super::restore::check_quarantine(settings)?;
    let (store, inv, check_dir) = if std::fs::symlink_metadata(dir).is_ok() {
        let store = Store::open(dir, false)?;
        // What the backup would refuse (claim writes nothing; the backup records it later).
        let owner = identity::claim(&store, settings)?;
        let store = store.owned_by(owner);
        let inv = store.inventory()?;
        (Some(store), inv, dir.clone())
    } else {
        warnings.push(format!(
            "`{}` does not exist yet; the backup would create it (0700)",
            dir.display()
        ));
        (
            None,
            Inventory::default(),
            files::parent_of(dir).to_path_buf(),
        )
    };
    let space = space::check(&check_dir, needed, settings.config.backup_min_free_bytes)?;
    let id = super::store::base_id(&settings.db_stem(), now);
    let mut cands = match &store {
        Some(store) => {
            warnings.extend(inventory_warnings(store, &inv, now));
            candidates(store, &inv, None)?
        }
        None => Vec::new(),
    };
    // The backup this run would make becomes the last one made, and `latest` names it.
    for c in &mut cands {
        c.last_made = false;
        c.latest = false;
    }
    cands.push(Candidate {
        id: id.clone(),
        created_at: now,
        bytes: needed,
        pinned: false,
        verified: true,
        fresh: true,
        proven: settings.config.verify_level == VerifyLevel::Full,
        latest: true,
        last_made: true,
        in_use: false,
    });
    let plan = retention::plan(&cands, now, policy(settings));
    warnings.extend(plan.warnings.iter().cloned());
    Ok(DryRun {
        would_create: id,
        space: SpaceReport {
            available_bytes: space.available,
            required_bytes: space.required,
            backups_bytes: Store::used_bytes(&inv),
        },
        rotation: rotation_report(&plan),
        warnings,
    })
}

/// Main file (its locked descriptor) plus WAL files: an upper bound on the backup's size.
fn source_bytes(source: &SourceLock, wals: &[(PathBuf, u64)]) -> u64 {
    let main = source.file.metadata().map_or(0, |m| m.len());
    main + wals.iter().map(|(_, n)| n).sum::<u64>()
}

/// Takes, verifies, publishes and rotates one backup.
///
/// `guards_a_run` (the hook's pre_run): a run follows that writes the database until its
/// post_run, so another guarded run still in progress refuses this one (`lease`), and this one
/// is recorded once its backup is published.
pub fn run(
    settings: &Settings,
    now: DateTime<Utc>,
    request_id: Option<&str>,
    guards_a_run: bool,
) -> Result<Outcome> {
    let t = std::time::Instant::now();
    let phase = |name: &str| tracing::debug!("{name}: {} ms", t.elapsed().as_millis());
    check_database(settings)?;
    let store = Store::open(&settings.backup_dir, true)?;
    let _dir_lock = store.lock_only()?;
    // Only this database's backups from here on: rotation and `latest` never see another's,
    // and a directory of another database is refused before anything in it is touched.
    let owner = identity::claim(&store, settings)?;
    let store = store.owned_by(owner.clone());
    if guards_a_run {
        super::lease::check(store.dir())?;
    }
    let cleaned = store.clean_leftovers(true)?;
    let recovered = super::restore::recover(settings)?;
    // Read once: rotation later plans over it plus the backup this run publishes (the
    // directory lock keeps other ducksafe runs out meanwhile).
    let mut inv = store.inventory()?;
    let source = SourceLock::acquire(&settings.db_path)?;
    failpoint::hit("backup.locked");
    phase("locked");

    // The WAL files are read once, under the lock (no writer can add one now): they decide the
    // space needed, whether the copy will be byte-exact, and what gets folded in.
    let wals = snapshot::present_wals(&settings.db_path);
    let needed = source_bytes(&source, &wals);
    let space = space::check(store.dir(), needed, settings.config.backup_min_free_bytes)?;

    let id = store.next_id(&settings.db_stem(), now)?;
    let limits = limits(settings);
    let (snap, verified) = copy_and_verify(settings, &source, &wals, store.temp_path(&id), &limits)
        .map_err(|e| with_way_out(e, settings, &inv))?;
    failpoint::hit("backup.verified");
    phase("copied, synced, read back and verified");

    // The first backup of this database in this directory records it as the owner, before the
    // manifest that names the same id is published.
    identity::record(store.dir(), &owner)?;
    let manifest = manifest_for(settings, &owner, &id, now, &snap, verified, request_id);
    let path = store.publish(snap.temp.path(), &manifest)?;
    snap.temp.disarm();
    drop(source);
    failpoint::hit("publish.renamed");
    phase("published");

    let mut warnings = snap.warnings.clone();
    if let Some(w) = store.point_latest(&id)? {
        warnings.push(w);
    }
    failpoint::hit("backup.latest");
    if guards_a_run {
        if let Err(e) = super::lease::record(store.dir(), &id, request_id) {
            warnings.push(format!(
                "the run that follows could not be recorded ({e}): another guarded run of this database will not wait for it"
            ));
        }
    }

    inv.backups.push(super::store::Entry {
        id: id.clone(),
        manifest: manifest.clone(),
        file_bytes: Some(snap.bytes),
    });
    let plan = retention::plan(&candidates(&store, &inv, Some(&id))?, now, policy(settings));
    warnings.extend(plan.warnings.iter().cloned());
    warnings.extend(inventory_warnings(&store, &inv, now));
    let rotation = apply_plan(&store, &plan, &mut warnings);
    failpoint::hit("rotation.done");
    phase("rotated");
    let deleted: u64 = rotation.deleted.iter().map(|d| d.bytes).sum();
    Ok(Outcome {
        manifest,
        path,
        rotation,
        space: SpaceReport {
            available_bytes: space.available,
            required_bytes: space.required,
            backups_bytes: Store::used_bytes(&inv).saturating_sub(deleted),
        },
        warnings,
        cleaned,
        recovered,
    })
}

/// A damaged database: names the newest backup to restore, and the command that does it.
///
/// Good means proven by more than a quick open: DuckDB's block checksums checked during its
/// copy, or a full scan of every table. A backup from before block checksums were checked at
/// `quick` is named only with the advice to verify it first.
fn with_way_out(e: Error, settings: &Settings, inv: &Inventory) -> Error {
    let Error::DatabaseDamaged { path, why, .. } = e else {
        return e;
    };
    // Proven when it was taken, and still the bytes its manifest recorded now (read once, on
    // this failure path only): the hint never names a backup the restore would refuse.
    let intact = |b: &super::store::Entry| {
        let path = settings
            .backup_dir
            .join(super::store::backup_file_name(&b.id));
        files::hash_file(&path).is_ok_and(|h| {
            h.bytes == b.manifest.bytes && files::hex(&h.sha256) == b.manifest.sha256
        })
    };
    let proven = |b: &&super::store::Entry| b.manifest.verification.blocks_proven() && intact(b);
    let restore = match inv.backups.iter().find(proven) {
        Some(b) => Some(format!(
            "The newest good backup is `{}` (taken {}, verified: {}). Restore it: {}",
            b.id,
            b.manifest.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            b.manifest.verification.checks.join(", "),
            crate::rollback::restore_command_line(settings, &b.manifest)
        )),
        None => inv.backups.iter().find(|b| intact(b)).map(|b| {
            format!(
                "The newest backup, `{}` (taken {}), was checked only at VERIFY_LEVEL {}: prove it first with `ducksafe verify {}`, then restore it: {}",
                b.id,
                b.manifest.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                b.manifest.verification.level,
                b.id,
                crate::rollback::restore_command_line(settings, &b.manifest)
            )
        }),
    };
    Error::DatabaseDamaged { path, why, restore }
}

/// Copies the locked source and verifies the copy at the configured level.
///
/// Without a WAL the copy will be byte-identical to the source (the read-back proves it), so
/// the source's scan is the copy's scan: it runs alongside the copy instead of after it, and the
/// copy itself is opened by DuckDB (catalog) while it is fsynced. After a WAL fold the folded
/// copy is scanned and compared with the source table by table.
fn copy_and_verify(
    settings: &Settings,
    source: &SourceLock,
    wals: &[(PathBuf, u64)],
    temp_path: PathBuf,
    limits: &duck::Limits,
) -> Result<(snapshot::Snapshot, verify::Outcome)> {
    let level = settings.config.verify_level;
    let byte_exact = wals.is_empty();
    std::thread::scope(|scope| {
        let source_scan = (byte_exact && level > VerifyLevel::Quick).then(|| {
            scope.spawn(|| {
                verify::inspect(&settings.db_path, level, limits, &|e| {
                    let why = e.to_string();
                    if why.contains("Corrupt database file") {
                        Error::DatabaseDamaged {
                            path: settings.db_path.clone(),
                            why,
                            restore: None,
                        }
                    } else {
                        Error::DatabaseInvalid {
                            path: settings.db_path.clone(),
                            why,
                        }
                    }
                })
            })
        });
        let taken = snapshot::take(source, wals, temp_path, limits, |temp, folded| {
            let copy_level = if source_scan.is_some() && !folded {
                VerifyLevel::Quick
            } else {
                level
            };
            verify::fresh(temp, folded, &settings.db_path, copy_level, limits)
        });
        let scanned = source_scan.map(|h| {
            h.join()
                .map_err(|_| Error::Internal("the scanning thread panicked".into()))
                .and_then(|r| r)
        });
        let (snap, mut verified) = taken?;
        if let Some(scanned) = scanned {
            verify::adopt_source_scan(&mut verified, scanned?, level, snap.temp.path())?;
        }
        Ok((snap, verified))
    })
}

/// The manifest of a verified copy.
fn manifest_for(
    settings: &Settings,
    owner: &identity::Owner,
    id: &str,
    now: DateTime<Utc>,
    snap: &snapshot::Snapshot,
    verified: verify::Outcome,
    request_id: Option<&str>,
) -> Manifest {
    let contents = verified.contents;
    let mut checks = verified.checks;
    if snap.blocks_checked.is_some() {
        // After `sha256`: the bytes were proven first, then DuckDB's checksums over them.
        let at = checks
            .iter()
            .position(|c| c == "sha256")
            .map_or(0, |i| i + 1);
        checks.insert(at, "block_checksums".into());
    }
    Manifest {
        format: super::manifest::FORMAT,
        id: id.to_owned(),
        file: format!("{id}.duckdb"),
        created_at: now,
        bytes: snap.bytes,
        sha256: files::hex(&snap.sha256),
        source: SourceInfo {
            path: owner.database.display().to_string(),
            database_id: owner.id.clone(),
            bytes: snap.source_bytes,
            sha256: files::hex(&snap.source_sha256),
            wal_bytes: snap.wal_bytes,
            wal_folded: snap.wal_folded,
            copy_method: Some(snap.copy_method),
        },
        duckdb_version: contents.duckdb_version,
        storage_version: contents.header.storage_version,
        created_by: contents.header.created_by,
        tables: contents.tables,
        views: contents.views,
        sequences: contents.sequences,
        verification: Verification {
            level: settings.config.verify_level.as_str().to_owned(),
            checks,
            verified_at: Utc::now(),
        },
        request_id: request_id.map(str::to_owned),
        pinned: false,
        ducksafe_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}
