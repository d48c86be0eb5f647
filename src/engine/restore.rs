//! Restore: put a verified backup back in place of the database, and move the database it
//! replaces, with every WAL file beside it, into a quarantine folder (never deleted).
//!
//! The order, and why:
//! 1. refuse what must not be restored: a symlinked `DB_PATH`, another database's backup
//!    directory, a guarded run still in progress (its work would be erased), a backup other
//!    than the one asked for (`--expect-sha256`); finish an interrupted restore first
//!    ([`journal::recover`]);
//! 2. check the backup's size against its manifest;
//! 3. take an exclusive lock on the database: nobody, reader or writer, has it open; refuse
//!    when the writes to come could not be made (the database's folder or the quarantine not
//!    writable, no room for the staged copy);
//! 4. stage: copy the backup beside the database ([`staging`]), fsync, read it back: its
//!    SHA-256 must be the manifest's, and DuckDB must open it with the manifest's tables. A bad
//!    backup is refused here, before anything of the database moves;
//! 5. write the intent ([`journal`], state `prepared`) in the quarantine folder, fsync;
//! 6. move the WAL files into quarantine, hard-link the database there (so the database path
//!    never stops existing: a DuckDB opening it meanwhile would create an empty database), and
//!    rename the staged file over the database, fsync the directory;
//! 7. mark the intent `done`. The restored file is byte-identical to the verified backup, so
//!    its table fingerprints are the manifest's (the tests check them by scanning).
//!
//! A crash before 5 leaves the old state plus a staged copy that the database's next command
//! removes; a crash after 5 is finished by the next command that touches the database (see
//! [`journal`]).
//!
//! A dry run is this same path with `dry_run` set: every refusal above is made, under the same
//! locks, with the backup's bytes and tables checked in place instead of on a staged copy; it
//! stops before the first write.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::journal::{self, Intent};
use super::lock::{DatabaseLock, DirLock};
use super::manifest::{Manifest, Storage};
use super::staging::{self, Staged};
use super::store::{Entry, Store};
use super::{database, identity, lease, quarantine, shell, space, verify};
use crate::config::{Settings, VerifyLevel};
use crate::duck::{self, Limits};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::files;

/// The decided names of one restore; nothing touched yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub backup: PathBuf,
    pub backup_id: String,
    pub backup_sha256: String,
    pub database: PathBuf,
    pub quarantine: PathBuf,
    pub staged: PathBuf,
    /// (from, to): the WAL files that exist now, then the database itself (linked, not moved).
    pub moves: Vec<(PathBuf, PathBuf)>,
}

impl Plan {
    /// Shell commands that undo the restore: put the quarantined files back.
    pub fn undo_commands(&self, quarantined: &[PathBuf]) -> Vec<String> {
        shell::put_back(&self.database, &self.moves, quarantined)
    }
}

/// What a restore did (or, in a dry run, would do: nothing quarantined yet).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub plan: Plan,
    pub quarantined: Vec<PathBuf>,
    pub checks: Vec<String>,
    pub duration_ms: u64,
    /// The database already was the backup, byte for byte, with no WAL beside it: nothing was
    /// moved and no quarantine folder was made.
    pub unchanged: bool,
    /// Set when this restore was the completion of an interrupted one (its journal): the
    /// requested backup was that restore's, so it was not restored a second time.
    pub finished_journal: Option<PathBuf>,
}

/// Restores the backup `selector` names (`latest`, an id, a path). When an interrupted restore
/// of the requested backup was finished first, finishing it is the restore: the database is
/// not replaced a second time, and the undo lines name the files it really replaced. Returns
/// the backup's manifest, the outcome, and notes about recovered leftovers.
pub fn run(
    settings: &Settings,
    selector: &str,
    expect_sha256: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(Manifest, Outcome, Vec<String>)> {
    restore(settings, selector, expect_sha256, now, false)
}

/// [`run`] as a dry run: the same refusals, nothing written. Returns what the restore would
/// do: its plan, or, when the database already is the backup (`unchanged`), nothing.
pub fn dry_run(
    settings: &Settings,
    selector: &str,
    expect_sha256: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Outcome> {
    restore(settings, selector, expect_sha256, now, true).map(|(_, o, _)| o)
}

/// The one restore path; `dry_run` skips every write and nothing else.
fn restore(
    settings: &Settings,
    selector: &str,
    expect_sha256: Option<&str>,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<(Manifest, Outcome, Vec<String>)> {
    let started = std::time::Instant::now();
    database::path(settings)?;
    let store = Store::open(&settings.backup_dir, false)?;
    // Held to the end: no other ducksafe run changes the directory meanwhile.
    let _lock = if dry_run {
        DirLock::acquire_without_writing(store.dir())?
    } else {
        DirLock::acquire_for_restore(store.dir())?
    };
    // Only this database's backups: `latest`, an id or a path never reaches another's.
    let owner = identity::check(store.dir(), settings)?;
    let store = store.owned_by(owner);
    // A guarded run in progress writes the database until its own post_run: only that run's
    // caller may restore now. Another restore (an older run's rollback, an operator's command)
    // would erase its work (`lease`), through whichever backup directory. The database's turn
    // is held to the end: no guarded run starts meanwhile through another one.
    let db = database::path(settings)?;
    let _turn = if dry_run {
        lease::check(&db, store.dir())?;
        None
    } else {
        Some(lease::Turn::take(&db, store.dir())?)
    };
    let recovery = journal::recover(settings, dry_run)?;
    let entry = store.resolve(selector)?;
    check_expected(settings, &entry, expect_sha256)?;
    let mine = recovery
        .finished
        .iter()
        .rposition(|f| f.intent.backup_id == entry.id);
    // The completion of this very restore is said by the outcome, not as a note besides.
    let mut notes: Vec<String> = recovery
        .finished
        .iter()
        .enumerate()
        .filter(|&(i, _)| Some(i) != mine)
        .map(|(_, f)| f.note.clone())
        .chain(recovery.notes.iter().cloned())
        .collect();
    if let Some(f) = mine.map(|i| &recovery.finished[i]) {
        let plan = Plan {
            backup: store.backup_path(&entry.id),
            backup_id: entry.id.clone(),
            backup_sha256: f.intent.backup_sha256.clone(),
            database: f.intent.database.clone(),
            quarantine: files::parent_of(&f.journal).to_path_buf(),
            staged: f.intent.staged.clone(),
            moves: f.intent.moves.clone(),
        };
        let outcome = Outcome {
            plan,
            quarantined: f.quarantined.clone(),
            // The file put in place is the staged copy, whose SHA-256 is the one verified
            // (with the open and the tables) when it was first staged.
            checks: vec![
                "size".into(),
                "sha256".into(),
                "open".into(),
                "tables".into(),
            ],
            duration_ms: elapsed_ms(started),
            unchanged: false,
            finished_journal: Some(f.journal.clone()),
        };
        return Ok((entry.manifest, outcome, notes));
    }
    let plan = plan(settings, &store, &entry, now);
    let limits = database::limits(settings);
    let outcome = apply(&plan, &store, &entry, &limits, dry_run, &mut notes)?;
    Ok((entry.manifest, outcome, notes))
}

fn elapsed_ms(started: std::time::Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Refuses, changing nothing, a backup whose content is not the one a rollback instruction was
/// written for (`expected`, its SHA-256): an id that came to name other content.
pub(super) fn check_expected(
    settings: &Settings,
    entry: &Entry,
    expected: Option<&str>,
) -> Result<()> {
    match expected {
        Some(want) if !want.eq_ignore_ascii_case(&entry.manifest.sha256) => {
            Err(Error::RestoreFailed {
                database: settings.db_path.clone(),
                why: format!(
                    "backup `{}` is not the backup this restore was asked for: its SHA-256 is {}, the instruction expected {want}; nothing was changed (`ducksafe list` shows the backups there are)",
                    entry.id, entry.manifest.sha256
                ),
            })
        }
        _ => Ok(()),
    }
}

/// Decides the names of a restore. Pure apart from looking at which files exist.
pub fn plan(settings: &Settings, store: &Store, entry: &Entry, now: DateTime<Utc>) -> Plan {
    let database = settings.db_path.clone();
    let quarantine = quarantine::folder_for(settings, now);
    let into_quarantine = |p: &Path| quarantine.join(files::file_name(p));
    let mut moves: Vec<(PathBuf, PathBuf)> = duck::wal_paths(&database)
        .into_iter()
        .filter(|w| fs::symlink_metadata(w).is_ok())
        .map(|w| {
            let to = into_quarantine(&w);
            (w, to)
        })
        .collect();
    if fs::symlink_metadata(&database).is_ok() {
        moves.push((database.clone(), into_quarantine(&database)));
    }
    Plan {
        backup: store.backup_path(&entry.id),
        backup_id: entry.id.clone(),
        backup_sha256: entry.manifest.sha256.clone(),
        staged: staging::path_for(&database, &entry.id),
        database,
        quarantine,
        moves,
    }
}

/// Carries out a restore plan (steps 2 to 7), or, in a dry run, makes its checks and stops
/// before the first write. The caller holds the backup directory's lock. A quarantine root
/// tightened to `0700` is said in `notes`.
fn apply(
    plan: &Plan,
    store: &Store,
    entry: &Entry,
    limits: &Limits,
    dry_run: bool,
    notes: &mut Vec<String>,
) -> Result<Outcome> {
    let started = std::time::Instant::now();
    let bad_backup = |why: String| Error::VerificationFailed {
        path: plan.backup.clone(),
        why,
    };
    // 2. Cheap refusals first: a backup whose size is not the manifest's is not copied at all.
    //    A packed backup has no file: it is rebuilt from the block store, every block and the
    //    whole file's SHA-256 checked.
    let packed = entry.manifest.storage == Storage::Packed;
    if !packed {
        verify::check_size(&plan.backup, &entry.manifest).map_err(&bad_backup)?;
    }

    // 3. Nobody may have the database open.
    let _db_lock = DatabaseLock::acquire_if_present(&plan.database)?;
    let outcome = |quarantined: Vec<PathBuf>, checks: &[&str], unchanged: bool| Outcome {
        plan: plan.clone(),
        quarantined,
        checks: checks.iter().map(|c| (*c).to_owned()).collect(),
        duration_ms: elapsed_ms(started),
        unchanged,
        finished_journal: None,
    };
    if already_the_backup(plan, entry, packed) {
        // Nothing to put back: say so rather than replace the file by an identical copy.
        return Ok(outcome(Vec::new(), &["size", "sha256"], true));
    }
    let checks = ["size", "sha256", "open", "tables"];
    // What staging and the quarantine will need, checked before anything is copied.
    check_room(plan, entry)?;

    // 4. The backup's bytes must be the manifest's (this is the backup's verification), and
    //    DuckDB must open them with the manifest's tables: on the staged copy beside the
    //    database, or, in a dry run, on the backup itself (read only).
    let opens = |path: &Path, what: &str| -> Result<()> {
        let opened = verify::inspect(path, VerifyLevel::Quick, limits, &|e| {
            bad_backup(format!("DuckDB cannot open {what}: {e}"))
        })?;
        verify::compare_tables(&entry.manifest.tables, &opened.tables).map_err(&bad_backup)
    };
    if dry_run && packed {
        // Rebuilt as a stream, written nowhere; DuckDB cannot open a stream.
        store.check_rebuild(&store.inventory()?, entry)?;
        return Ok(outcome(Vec::new(), &["size", "sha256", "blocks"], false));
    }
    if dry_run {
        staging::check_in_place(&plan.backup, entry.manifest.bytes, &entry.manifest.sha256)?;
        opens(&plan.backup, "it")?;
        return Ok(outcome(Vec::new(), &checks, false));
    }
    let staged = if packed {
        let inv = store.inventory()?;
        Staged::fill(&plan.staged, |out| {
            store.rebuild_into(&inv, entry, out, &plan.staged).map(drop)
        })?
    } else {
        Staged::create(
            &plan.backup,
            &plan.staged,
            entry.manifest.bytes,
            &entry.manifest.sha256,
        )?
    };
    opens(&plan.staged, "the copy")?;
    failpoint::hit("restore.staged");

    // 5. The intent, durable before anything moves, and the marker beside the database, where
    //    every later command looks whatever its configuration says.
    notes.extend(quarantine::ensure(files::parent_of(&plan.quarantine))?);
    files::create_private_dir(&plan.quarantine)
        .map_err(|e| Error::io("create quarantine folder", &plan.quarantine, e))?;
    let mut intent = Intent {
        backup_id: plan.backup_id.clone(),
        backup_sha256: plan.backup_sha256.clone(),
        database: plan.database.clone(),
        staged: plan.staged.clone(),
        moves: plan.moves.clone(),
        state: "prepared".into(),
        started_at: Utc::now(),
    };
    let journal = intent.begin(&plan.quarantine)?;
    staged.keep();
    failpoint::hit("restore.intent");

    // 6. Quarantine, then the atomic switch. From here on the journal speaks for the restore.
    let quarantined = intent.complete(&journal).map_err(|e| Error::RestoreFailed {
        database: plan.database.clone(),
        why: format!(
            "{e}; the journal `{}` records this restore: the next `ducksafe restore` or backup completes it, or, if its staged copy is gone, puts the database back exactly as it was",
            journal.display()
        ),
    })?;
    intent
        .close(&plan.quarantine, "done")
        .map_err(|e| Error::RestoreFailed {
            database: plan.database.clone(),
            why: format!(
                "the database WAS replaced by backup `{}`, but its journal could not be closed ({e}); the previous files are in `{}`",
                plan.backup_id,
                plan.quarantine.display()
            ),
        })?;

    // 7. The restored file is the staged one: byte-identical to the verified backup (its
    //    SHA-256, read back, is the manifest's), so every table's fingerprint is the manifest's
    //    without a second scan. Checked once more: it is in place and starts like a database.
    duck::check_header(&plan.database).map_err(|e| Error::RestoreFailed {
        database: plan.database.clone(),
        why: format!(
            "the restored file does not look like a database ({e}); the database WAS replaced, and the previous one is in `{}` (undo: {})",
            plan.quarantine.display(),
            plan.undo_commands(&quarantined).join(" && ")
        ),
    })?;
    Ok(outcome(quarantined, &checks, false))
}

/// What the writes of a restore need, checked without writing (a dry run and the restore make
/// the same refusals): this user may write in the database's folder (the staged copy) and where
/// the quarantine folder goes, and the database's filesystem has room for the staged copy. Each
/// refusal is the one the write itself would end in; nothing has changed yet.
fn check_room(plan: &Plan, entry: &Entry) -> Result<()> {
    let db_dir = files::parent_of(&plan.database);
    files::access_write(db_dir).map_err(|e| Error::io("stage the restore at", &plan.staged, e))?;
    // The quarantine root is created (without parents) when missing, then a folder in it.
    let root = files::parent_of(&plan.quarantine);
    let (dir, action, made) = if fs::symlink_metadata(root).is_ok() {
        (root, "create quarantine folder", plan.quarantine.as_path())
    } else {
        (files::parent_of(root), "create", root)
    };
    files::access_write(dir).map_err(|e| Error::io(action, made, e))?;
    space::check_staging(&plan.staged, entry.manifest.bytes)
}

/// Whether the database already is the backup: no WAL file beside it, and its bytes and the
/// backup's are the manifest's (SHA-256; read only when the sizes match). A damaged backup is
/// never "already there": the normal path then refuses it. The caller holds the database's
/// exclusive lock.
fn already_the_backup(plan: &Plan, entry: &Entry, packed: bool) -> bool {
    let is_backup = |p: &Path| {
        files::hash_file(p).is_ok_and(|h| files::hex(&h.sha256) == entry.manifest.sha256)
    };
    let candidate = duck::wal_paths(&plan.database)
        .iter()
        .all(|w| fs::symlink_metadata(w).is_err())
        && fs::symlink_metadata(&plan.database)
            .is_ok_and(|m| m.file_type().is_file() && m.len() == entry.manifest.bytes);
    // Both files read at once, on both cores: no slower than staging a copy would be.
    candidate
        && std::thread::scope(|s| {
            // A packed backup has no file to read: the manifest's SHA-256 is its content.
            let backup = s.spawn(|| packed || is_backup(&plan.backup));
            is_backup(&plan.database) && backup.join().unwrap_or(false)
        })
}
