//! The backup, start to finish. Each step is a module of its own; this file is their order:
//!
//! 1. [`database`](super::database): the database exists and is a DuckDB file, not a symlink;
//! 2. [`lock`](super::lock): take the backup directory (one ducksafe at a time; created `0700`,
//!    or [tightened](super::folders) to it), check that it is this database's
//!    ([`identity`](super::identity)) and that no other guarded run is in progress
//!    ([`lease`](super::lease));
//! 3. [`store`](super::store) and [`journal`](super::journal): remove what an interrupted backup
//!    left behind, finish an interrupted restore;
//! 4. [`lock`](super::lock) again: a shared lock on the database (no writer can start; a writer
//!    already in is refused at once); [`space`](super::space): refuse before writing a byte when
//!    the copy cannot fit;
//! 5. [`snapshot`](super::snapshot): copy to a temporary name, fold the WAL in, fsync, read back;
//! 6. [`verify`](super::verify): open the copy, compare it with the source;
//! 7. [`manifest`](super::manifest) and [`store`](super::store): publish (manifest, sidecar,
//!    no-replace rename, directory fsync), then swap `latest`;
//! 8. [`retention`](super::retention): only now, rotate old backups.
//!
//! Invariant: a failure at any step before 7 leaves the backups as they were (the temporary
//! file is removed by its guard) and never touches `latest` or an earlier backup. What steps 2
//! and 3 changed (the directory tightened, leftovers swept, an interrupted restore finished) is
//! said by the failure too ([`Refused`]).
//!
//! A dry run is steps 1 to 4 with `dry_run` set, the same refusals under the same locks and
//! nothing written, then the copy's block checks read in place ([`snapshot::check_source`]) and
//! the rotation planned as if the backup had been published. What only the copy itself can
//! show (a WAL whose fold fails, a copy that reads back wrong) is not foreseen.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::database::{self, Owner};
use super::lock::{DirLock, SourceLock};
use super::manifest::{Manifest, SourceInfo, Verification};
use super::retention::{self, Candidate};
use super::store::{self, Inventory, Store};
use super::{folders, identity, journal, lease, quarantine, shell, snapshot, space, verify};
use crate::config::{BackupStorage, Settings, VerifyLevel};
use crate::duck::{self, DuckError};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::files;
use crate::protocol::{RotationReport, SpaceReport};

/// What a backup did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub manifest: Manifest,
    pub path: PathBuf,
    pub rotation: RotationReport,
    pub space: SpaceReport,
    /// What it said and changed besides the backup itself.
    pub notes: Notes,
}

/// What a backup has said so far: remarks, and what it changed before its copy (a folder
/// tightened, leftovers swept, an interrupted restore finished). A refused backup says them too
/// ([`Refused`]): those changes were made.
#[derive(Debug, Clone, Default)]
pub struct Notes {
    pub warnings: Vec<String>,
    /// Leftovers of interrupted backups that were removed (file names).
    pub cleaned: Vec<String>,
    /// Interrupted restores that were completed (one line each).
    pub recovered: Vec<String>,
}

/// A backup that failed: why, and what it had said (and changed) before.
#[derive(Debug)]
pub struct Refused {
    pub error: Error,
    pub notes: Box<Notes>,
}

impl From<Error> for Refused {
    fn from(error: Error) -> Self {
        Refused {
            error,
            notes: Box::default(),
        }
    }
}

/// What a dry run found: nothing was written.
#[derive(Debug, Clone)]
pub struct DryRun {
    pub would_create: String,
    pub space: SpaceReport,
    pub rotation: RotationReport,
    pub warnings: Vec<String>,
}

/// Everything a backup has checked and holds before the first byte of its copy (steps 1 to 4).
struct Ready {
    /// `None` only in a dry run whose backup directory does not exist yet.
    store: Option<Store>,
    owner: Owner,
    _dir_lock: Option<DirLock>,
    /// A guarded run's turn on the database, held from its check to its record.
    turn: Option<lease::Turn>,
    source: SourceLock,
    /// The WAL files beside the database, read once under the lock: they decide the space
    /// needed, whether the copy will be byte-exact, and what gets folded in.
    wals: Vec<(PathBuf, u64)>,
    /// Main file plus WAL files: an upper bound on the backup's size.
    needed: u64,
    space: space::Space,
    /// Read once: rotation later plans over it plus the backup this run publishes (the
    /// directory lock keeps other ducksafe runs out meanwhile).
    inv: Inventory,
    id: String,
}

/// Steps 1 to 4, for a backup and its dry run alike: a dry run makes every check and takes
/// every lock, and writes nothing (it neither creates nor tightens the directory, sweeps
/// nothing and finishes no interrupted restore). What it says and changes goes to `notes` as
/// it goes, so that a refusal later still says it.
fn prepare(
    settings: &Settings,
    now: DateTime<Utc>,
    guards_a_run: bool,
    dry_run: bool,
    notes: &mut Notes,
) -> Result<Ready> {
    database::check(settings)?;
    crate::timing::phase("database checked");
    let dir = &settings.backup_dir;
    let warnings = &mut notes.warnings;
    // Where a directory that does not exist yet would be created: its free space decides.
    let mut creatable_under = None;
    let store = if dry_run {
        match check_dir(dir)? {
            Dir::Exists(store) => Some(store),
            Dir::Creatable { under } => {
                creatable_under = Some(under);
                warnings.push(format!(
                    "`{}` does not exist yet; the backup would create it (0700)",
                    dir.display()
                ));
                None
            }
        }
    } else {
        let store = Store::open(dir, true)?;
        warnings.extend(store.tighten());
        Some(store)
    };
    let dir_lock = match &store {
        Some(s) if dry_run => DirLock::acquire_without_writing(s.dir())?,
        Some(s) => Some(s.lock_only()?),
        None => None,
    };
    // Only this database's backups from here on: rotation and `latest` never see another's,
    // and a directory of another database is refused before anything in it is touched.
    let (store, owner) = if let Some(s) = store {
        let owner = identity::claim(&s, settings)?;
        (Some(s.owned_by(owner.clone())), owner)
    } else {
        let owner = Owner {
            id: None,
            database: database::path(settings)?,
            recorded: false,
        };
        (None, owner)
    };
    let turn = take_turn(
        guards_a_run,
        dry_run,
        &owner.database,
        dir,
        &mut notes.warnings,
    )?;
    crate::timing::phase("backup directory opened, locked and claimed");
    if let Some(s) = store.as_ref().filter(|_| !dry_run) {
        notes.cleaned = s.clean_leftovers(true)?;
    }
    notes.recovered = journal::recover(settings, dry_run)?.all_notes();
    if !dry_run {
        // The quarantine root (checked by the recovery) holds compensation data too: a backup
        // tightens it as it tightens its own directory.
        notes
            .warnings
            .extend(folders::tighten(&quarantine::root(settings)));
    }
    let inv = match &store {
        Some(s) if !dry_run => swept_inventory(s, notes)?,
        Some(s) => s.inventory()?,
        None => Inventory::default(),
    };
    crate::timing::phase("leftovers, interrupted restores and inventory");
    let source = SourceLock::acquire(&settings.db_path)?;
    if !dry_run {
        failpoint::hit("backup.locked");
    }
    let wals = snapshot::present_wals(&settings.db_path);
    let needed = source_bytes(&source, &wals);
    let (space_dir, id) = match &store {
        Some(s) => (s.dir(), s.next_id(&settings.db_stem(), now)?),
        None => (
            creatable_under.as_deref().unwrap_or(dir),
            store::base_id(&settings.db_stem(), now),
        ),
    };
    let space = space::check(space_dir, needed, settings.config.backup_min_free_bytes)?;
    crate::timing::phase("database locked, next id, space checked");
    Ok(Ready {
        store,
        owner,
        _dir_lock: dir_lock,
        turn,
        source,
        wals,
        needed,
        space,
        inv,
        id,
    })
}

/// The inventory of a backup about to be taken, after removing what an interrupted conversion
/// or collection left (see `incremental`) and the packs no backup needs: neither can fail the
/// backup, only warn.
fn swept_inventory(s: &Store, notes: &mut Notes) -> Result<Inventory> {
    let inv = s.inventory()?;
    let swept = s.sweep_packed(&inv).unwrap_or_else(|e| {
        notes.warnings.push(format!(
            "what an interrupted conversion left was not removed ({e}); the next backup tries again"
        ));
        Vec::new()
    });
    let inv = if swept.is_empty() {
        inv
    } else {
        notes.cleaned.extend(swept);
        s.inventory()?
    };
    if let Err(e) = s.collect_packs(&inv) {
        notes.warnings.push(format!(
            "packs no backup needs were not deleted ({e}); the next backup tries again"
        ));
    }
    Ok(inv)
}

/// A guarded run's turn on the database `db`: refused while another guarded run of it is in
/// progress, through whichever backup directory; held until this run is recorded
/// ([`lease`]). A dry run checks the same and holds nothing; a backup that guards no run
/// neither.
fn take_turn(
    guards_a_run: bool,
    dry_run: bool,
    db: &Path,
    dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<Option<lease::Turn>> {
    if !guards_a_run {
        return Ok(None);
    }
    if dry_run {
        lease::check(db, dir)?;
        return Ok(None);
    }
    let turn = lease::Turn::take(db, dir)?;
    warnings.extend(turn.note.clone());
    Ok(Some(turn))
}

/// The backup directory as a backup would find it, checked without writing anything (for a
/// dry run and `validate`).
pub enum Dir {
    /// It is there: a private directory of this user, writable (`access(2)`; a read-only
    /// filesystem is refused as such, not as a permission problem).
    Exists(Store),
    /// It is not there yet, and the backup could create it, missing parents too: `under` is the
    /// nearest existing folder, on whose filesystem it would land.
    Creatable { under: PathBuf },
}

/// Checks the backup directory as [`run`] would use it, changing nothing: the one rule a dry
/// run and `validate` share, so that neither approves what the backup then refuses.
pub fn check_dir(dir: &Path) -> Result<Dir> {
    // A symlink, even a dangling one, is there: `Store::open` refuses it.
    if std::fs::symlink_metadata(dir).is_ok() {
        let store = Store::open(dir, false)?;
        store.check_writable()?;
        Ok(Dir::Exists(store))
    } else {
        Ok(Dir::Creatable {
            under: Store::check_creatable(dir)?,
        })
    }
}

/// Main file (its locked descriptor) plus WAL files: an upper bound on the backup's size.
fn source_bytes(source: &SourceLock, wals: &[(PathBuf, u64)]) -> u64 {
    let main = source.file.metadata().map_or(0, |m| m.len());
    main + wals.iter().map(|(_, n)| n).sum::<u64>()
}

/// Plans a backup without writing anything: the same checks and locks as [`run`] (see
/// [`prepare`]), the copy's block checks read in place, and the rotation the new backup would
/// cause.
pub fn dry_run(settings: &Settings, now: DateTime<Utc>, guards_a_run: bool) -> Result<DryRun> {
    let mut notes = Notes::default();
    let ready = prepare(settings, now, guards_a_run, true, &mut notes)?;
    let mut warnings = notes.warnings;
    warnings.extend(snapshot::check_source(
        &ready.source,
        &database::limits(settings),
    )?);
    let mut cands = match &ready.store {
        Some(store) => {
            warnings.extend(store.inventory_warnings(&ready.inv, now));
            store.candidates(&ready.inv, None)?
        }
        None => Vec::new(),
    };
    // The backup this run would make becomes the last one made, and `latest` names it.
    for c in &mut cands {
        c.last_made = false;
        c.latest = false;
    }
    cands.push(Candidate {
        id: ready.id.clone(),
        created_at: now,
        bytes: ready.needed,
        pinned: false,
        verified: true,
        fresh: true,
        proven: settings.config.verify_level == VerifyLevel::Full,
        latest: true,
        last_made: true,
        in_use: false,
    });
    let plan = retention::plan(&cands, now, retention::policy(settings));
    warnings.extend(plan.warnings.iter().cloned());
    Ok(DryRun {
        would_create: ready.id,
        space: SpaceReport {
            available_bytes: ready.space.available,
            required_bytes: ready.space.required,
            backups_bytes: Store::used_bytes(&ready.inv),
        },
        rotation: plan.report(),
        warnings,
    })
}

/// Takes, verifies, publishes and rotates one backup.
///
/// `guards_a_run` (the hook's pre_run): a run follows that writes the database until its
/// post_run, so another guarded run still in progress refuses this one (`lease`), and this one
/// is recorded once its backup is published.
///
/// A refusal carries what the backup had said and changed before it ([`Refused`]).
pub fn run(
    settings: &Settings,
    now: DateTime<Utc>,
    request_id: Option<&str>,
    guards_a_run: bool,
) -> Result<Outcome, Refused> {
    with_notes(settings, now, request_id, guards_a_run, false)
}

/// The undo backup a table restore takes before it writes (`restore --table`): taken and
/// verified like any other, but published pinned, never named by `latest.duckdb` and rotating
/// nothing. It is the database as it is before the restore, a state to go back to, not a
/// restore point to replace the others: it must not push the backup being restored from (or
/// any other) out of `BACKUP_KEEP_LAST` or the budget, and `latest` (what `restore latest` and
/// the seed's `cp backups/latest.duckdb` put back) keeps naming the last ordinary backup.
pub fn run_undo(
    settings: &Settings,
    now: DateTime<Utc>,
    request_id: &str,
) -> Result<Outcome, Refused> {
    with_notes(settings, now, Some(request_id), false, true)
}

/// [`run_noting`] with its notes handed to the outcome, or to the refusal.
fn with_notes(
    settings: &Settings,
    now: DateTime<Utc>,
    request_id: Option<&str>,
    guards_a_run: bool,
    undo: bool,
) -> Result<Outcome, Refused> {
    let mut notes = Notes::default();
    match run_noting(settings, now, request_id, guards_a_run, undo, &mut notes) {
        Ok(outcome) => Ok(Outcome { notes, ..outcome }),
        Err(error) => Err(Refused {
            error,
            notes: Box::new(notes),
        }),
    }
}

/// [`run`]'s work, which says and records its changes in `notes` as it goes: the outcome it
/// returns leaves them to [`run`].
fn run_noting(
    settings: &Settings,
    now: DateTime<Utc>,
    request_id: Option<&str>,
    guards_a_run: bool,
    undo: bool,
    notes: &mut Notes,
) -> Result<Outcome> {
    let phase = crate::timing::phase;
    let Ready {
        store,
        owner,
        _dir_lock,
        mut turn,
        source,
        wals,
        space,
        mut inv,
        id,
        ..
    } = prepare(settings, now, guards_a_run, false, notes)?;
    let warnings = &mut notes.warnings;
    let Some(store) = store else {
        return Err(Error::Internal(
            "the backup directory was not opened".into(),
        ));
    };

    let limits = database::limits(settings);
    let (snap, verified) = copy_and_verify(settings, &source, &wals, store.temp_path(&id), &limits)
        .map_err(|e| with_way_out(e, settings, &store, &inv))?;
    failpoint::hit("backup.verified");
    phase("copied, synced, read back and verified");

    // The first backup of this database in this directory records it as the owner, before the
    // manifest that names the same id is published.
    identity::record(store.dir(), &owner)?;
    phase("identity recorded");
    let mut manifest = manifest_for(settings, &owner, &id, now, &snap, verified, request_id);
    manifest.pinned = undo;
    let path = store.publish(snap.temp.path(), &manifest)?;
    snap.temp.disarm();
    drop(source);
    failpoint::hit("publish.renamed");
    phase("published (manifest, sidecar, rename, directory fsync)");

    warnings.extend(snap.warnings.iter().cloned());
    if !undo {
        if let Some(w) = store.swap_latest(&id)? {
            warnings.push(w);
        }
        failpoint::hit("backup.latest");
        // `latest` swapped: one folder fsync (the swap leaves it to its caller).
        files::sync_dir(store.dir()).map_err(|e| Error::io("sync", store.dir(), e))?;
    }
    if let Some(turn) = &mut turn {
        if let Err(e) = turn.record(&id, request_id) {
            warnings.push(format!(
                "the run that follows could not be recorded ({e}): another guarded run of this database will not wait for it"
            ));
        }
    }
    phase("latest swapped and synced, run recorded");

    inv.backups.push(store::Entry {
        id: id.clone(),
        manifest: manifest.clone(),
        file_bytes: Some(snap.bytes),
    });
    // The block store: the previous backup becomes its blocks the new one lacks. A backup
    // that cannot be converted stays a full copy, with a warning: never a failed run.
    if settings.config.backup_storage.blocks() {
        let independent = settings.config.backup_storage == BackupStorage::Independent;
        warnings.extend(store.convert_older(&mut inv, &id, independent));
        phase("older backups converted");
    }
    let rotation = rotate(settings, &store, &inv, &id, now, undo, warnings)?;
    failpoint::hit("rotation.done");
    phase("rotated");
    // Nothing is left that could fail this pre_run: the record stays (until here, a panic in
    // the conversion or the rotation answers `abort`, and the turn's drop removes the record:
    // no run follows). The turn's lock kept other guarded runs out meanwhile.
    if let Some(turn) = turn {
        turn.commit();
    }
    let deleted: u64 = rotation.deleted.iter().map(|d| d.bytes).sum();
    let outcome = Ok(Outcome {
        manifest,
        path,
        rotation,
        space: SpaceReport {
            available_bytes: space.available,
            required_bytes: space.required,
            // Real bytes whenever a block store is or was in use: a rotation that emptied the
            // packs folder leaves files whose manifests still count shares of packs.
            backups_bytes: if settings.config.backup_storage.blocks()
                || store.packs().dir().exists()
            {
                // Plain files and packs, as they are on disk after the rotation.
                store.inventory().map_or(0, |i| store.real_bytes(&i))
            } else {
                Store::used_bytes(&inv).saturating_sub(deleted)
            },
        },
        notes: Notes::default(),
    });
    phase("space reported");
    outcome
}

/// Retention after the backup `id` was published: its plan's warnings, the inventory's, then
/// those of deletions that failed. An undo backup (`undo`) rotates nothing: the next ordinary
/// backup applies retention.
fn rotate(
    settings: &Settings,
    store: &Store,
    inv: &Inventory,
    id: &str,
    now: DateTime<Utc>,
    undo: bool,
    warnings: &mut Vec<String>,
) -> Result<RotationReport> {
    let mut rotated = Vec::new();
    let rotation = if undo {
        RotationReport {
            kept: inv.backups.iter().map(|b| b.id.clone()).collect(),
            deleted: Vec::new(),
        }
    } else {
        let (plan, rotation) = store.apply_retention(
            inv,
            Some(id),
            now,
            retention::policy(settings),
            &mut rotated,
        )?;
        warnings.extend(plan.warnings);
        rotation
    };
    warnings.extend(store.inventory_warnings(inv, now));
    warnings.extend(rotated);
    Ok(rotation)
}

/// A damaged database: names the newest backup to restore, and the command that does it.
///
/// Good means proven by more than a quick open: DuckDB's block checksums checked during its
/// copy, or a full scan of every table. A backup from before block checksums were checked at
/// `quick` is named only with the advice to verify it first.
fn with_way_out(e: Error, settings: &Settings, store: &Store, inv: &Inventory) -> Error {
    let Error::DatabaseDamaged { path, why, .. } = e else {
        return e;
    };
    // Proven when it was taken, and still the bytes its manifest recorded now (read once, on
    // this failure path only): the hint never names a backup the restore would refuse.
    let intact = |b: &store::Entry| {
        files::hash_file(&store.backup_path(&b.id)).is_ok_and(|h| {
            h.bytes == b.manifest.bytes && files::hex(&h.sha256) == b.manifest.sha256
        })
    };
    let proven = |b: &&store::Entry| b.manifest.verification.blocks_proven() && intact(b);
    let restore = match inv.backups.iter().find(proven) {
        Some(b) => Some(format!(
            "The newest good backup is `{}` (taken {}, verified: {}). Restore it: {}",
            b.id,
            b.manifest.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            b.manifest.verification.checks.join(", "),
            shell::restore_line(settings, &b.id, &b.manifest.sha256)
        )),
        None => inv.backups.iter().find(|b| intact(b)).map(|b| {
            format!(
                "The newest backup, `{}` (taken {}), was checked only at VERIFY_LEVEL {}: prove it first with `ducksafe verify {}`, then restore it: {}",
                b.id,
                b.manifest.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                b.manifest.verification.level,
                b.id,
                shell::restore_line(settings, &b.id, &b.manifest.sha256)
            )
        }),
    };
    Error::DatabaseDamaged { path, why, restore }
}

/// Copies the locked source and verifies the copy at the configured level, with one DuckDB
/// instance for both databases.
///
/// DuckDB starts on a thread of its own as soon as the copy does, and creates its built-in
/// catalog there ([`duck::Instance::warm`]), so that its start-up overlaps the copy, the hash
/// and the fsync instead of following them. Without a WAL the copy will be byte-identical to
/// the source (the read-back proves it), so the source's scan is the copy's scan: that thread
/// runs it alongside the copy, and the copy itself is attached to the same instance (catalog)
/// while it is fsynced. After a WAL fold the folded copy is scanned and compared with the
/// source table by table, both attached to that instance.
fn copy_and_verify(
    settings: &Settings,
    source: &SourceLock,
    wals: &[(PathBuf, u64)],
    temp_path: PathBuf,
    limits: &duck::Limits,
) -> Result<(snapshot::Snapshot, verify::Outcome)> {
    let level = settings.config.verify_level;
    let byte_exact = wals.is_empty();
    let scan_source = byte_exact && level > VerifyLevel::Quick;
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let duck_thread = scope.spawn(move || {
            let duck = verify::started_for(&settings.db_path, limits).and_then(|d| {
                d.warm()?;
                Ok(d)
            });
            let duck = match duck {
                Ok(d) => d,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return None;
                }
            };
            let _ = started_tx.send(duck.connect());
            scan_source.then(|| {
                verify::inspect_in(&duck, &settings.db_path, level, limits, &|e| match e {
                    DuckError::Corrupt(why) => Error::DatabaseDamaged {
                        path: settings.db_path.clone(),
                        why,
                        restore: None,
                    },
                    other => Error::DatabaseInvalid {
                        path: settings.db_path.clone(),
                        why: other.to_string(),
                    },
                })
            })
        });
        let want_blocks = settings.config.backup_storage.blocks();
        let taken = snapshot::take(
            source,
            wals,
            temp_path,
            limits,
            want_blocks,
            |temp, folded| {
                let duck = started_rx
                    .recv()
                    .map_err(|_| Error::Internal("DuckDB's thread ended without a word".into()))?
                    .map_err(|e| Error::VerificationFailed {
                        path: temp.to_path_buf(),
                        why: format!("DuckDB cannot start: {e}"),
                    })?;
                let copy_level = if scan_source && !folded {
                    VerifyLevel::Quick
                } else {
                    level
                };
                verify::fresh(&duck, temp, folded, &settings.db_path, copy_level, limits)
            },
        );
        let scanned = duck_thread
            .join()
            .map_err(|_| Error::Internal("DuckDB's thread panicked".into()));
        let (snap, mut verified) = taken?;
        if let Some(scanned) = scanned? {
            verify::adopt_source_scan(&mut verified, scanned?, level, snap.temp.path())?;
        }
        Ok((snap, verified))
    })
}

/// The manifest of a verified copy.
fn manifest_for(
    settings: &Settings,
    owner: &Owner,
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
        file: store::backup_file_name(id),
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
        storage: super::manifest::Storage::Plain,
        blocks: snap.blocks.clone(),
        digest: None,
    }
}
