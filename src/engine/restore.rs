//! Restore: put a verified backup back in place of the database, and move the database it
//! replaces, with every WAL file beside it, into a quarantine folder (never deleted).
//!
//! The order, and why:
//! 1. check the backup's size against its manifest;
//! 2. take an exclusive lock on the database: nobody, reader or writer, has it open;
//! 3. stage: copy the backup to a temporary name in the database's directory, fsync, read it
//!    back: its SHA-256 must be the manifest's, and DuckDB must open it with the manifest's
//!    tables. A bad backup is refused here, before anything of the database moves;
//! 4. write the intent (`restore.json`, state `prepared`) in the quarantine folder, fsync;
//! 5. move the WAL files into quarantine, hard-link the database there (so the database path
//!    never stops existing: a DuckDB opening it meanwhile would create an empty database);
//! 6. rename the staged file over the database, fsync the directory;
//! 7. mark the intent `done`. The restored file is byte-identical to the verified backup, so
//!    its table fingerprints are the manifest's (the tests check them by scanning).
//!
//! A crash before 4 leaves the old state plus a staged copy that the database's next command
//! removes: staged copies are named with a tag of their database
//! ([`identity::staged_prefix`]) and locked by the process that restores, so a cleanup never
//! removes another database's copy or one still in use. A crash after 4 is completed by
//! [`recover`] at the next ducksafe command that touches the database: the staged file is
//! verified and fsynced, so rolling forward is possible; if the staged copy was lost meanwhile
//! and the switch (6) did not happen, the restore is rolled back instead (the main file never
//! left its path, the WAL files come back from quarantine). Whether the switch happened is told
//! by inode identity (the quarantined hard link is the old database), never by the database's
//! bytes. A stale WAL is never left beside a restored database, and nothing is ever deleted.
//!
//! [`pending`] describes unfinished restores without touching anything: every command reports
//! them first (what, where, the command that finishes it, the lines that undo it).

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::lock::{DatabaseLock, DirLock};
use super::store::{self, Entry, Store};
use super::{identity, verify};
use crate::config::{Settings, VerifyLevel};
use crate::duck::{self, Limits};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::files;

/// Name of the intent journal in a quarantine folder.
pub const INTENT: &str = "restore.json";

/// The journal of one restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub backup_id: String,
    pub backup_sha256: String,
    pub database: PathBuf,
    pub staged: PathBuf,
    /// Files moved (or to move) into quarantine: (from, to).
    pub moves: Vec<(PathBuf, PathBuf)>,
    pub state: String,
    pub started_at: DateTime<Utc>,
}

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

/// What a restore did.
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
/// An interrupted restore (journal `prepared`): what it is, what it left, and the ways out.
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    pub backup_id: String,
    pub journal: PathBuf,
    pub quarantine: PathBuf,
    pub started_at: DateTime<Utc>,
    /// Where it stopped and what that means for the database, in words.
    pub state: String,
    /// The one command that finishes it.
    pub finish: String,
    /// Shell commands that undo it instead: the database and its WAL files back as they were,
    /// and the journal closed (renamed `restore.json.undone`).
    pub undo: Vec<String>,
}

impl Pending {
    /// One line for warnings and error reports.
    pub fn line(&self) -> String {
        format!(
            "UNFINISHED RESTORE of backup `{}` (journal `{}`): {}; finish it with `{}`, or undo it (with nothing using the database): `{}`",
            self.backup_id,
            self.journal.display(),
            self.state,
            self.finish,
            self.undo.join(" && ")
        )
    }
}

/// An interrupted restore that [`recover`] finished.
#[derive(Debug, Clone)]
struct Finished {
    intent: Intent,
    journal: PathBuf,
    quarantined: Vec<PathBuf>,
}

impl Plan {
    /// Shell commands that undo the restore: put the quarantined files back.
    pub fn undo_commands(&self, quarantined: &[PathBuf]) -> Vec<String> {
        undo_moves(&self.database, &self.moves, quarantined)
    }
}

/// `mv -f` lines that put quarantined files back where they came from: the database first (a
/// WAL must never sit beside a file it does not belong to), then its WAL files. Files that came
/// late (`.late1`) are not part of the replaced state and stay in quarantine.
fn undo_moves(
    database: &Path,
    moves: &[(PathBuf, PathBuf)],
    quarantined: &[PathBuf],
) -> Vec<String> {
    let mut ordered: Vec<&(PathBuf, PathBuf)> = moves
        .iter()
        .filter(|(_, to)| quarantined.contains(to))
        .collect();
    ordered.sort_by_key(|(from, _)| from != database);
    ordered
        .into_iter()
        .map(|(from, to)| format!("mv -f {} {}", shell_quote(to), shell_quote(from)))
        .collect()
}

/// Quotes a path for a POSIX shell.
pub fn shell_quote(p: &Path) -> String {
    let s = p.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Where quarantined files go for `settings`: the configured folder when it shares the
/// database's filesystem (a rename cannot cross filesystems), else a private folder beside the
/// database.
pub fn quarantine_root(settings: &Settings) -> PathBuf {
    let db_dir = files::parent_of(&settings.db_path);
    let configured = &settings.quarantine_dir;
    let probe = if configured.exists() {
        configured.as_path()
    } else {
        files::parent_of(configured)
    };
    match (store::device_of(probe), store::device_of(db_dir)) {
        // A read-only mount of the database's filesystem (a snapshot) has its device number.
        (Some(a), Some(b)) if a == b && !files::is_read_only_fs(probe) => configured.clone(),
        _ => db_dir.join(".ducksafe-quarantine"),
    }
}

/// Makes sure a quarantine folder (`dir`: the root, or the folder a restore creates in it) is a
/// private directory of this user, creating it when missing. An unsafe one is reported under
/// the key that decides it, `QUARANTINE_DIR`.
fn ensure_quarantine_dir(dir: &Path) -> Result<()> {
    store::ensure_private_dir(dir).map_err(|e| match e {
        Error::BackupDirUnsafe { dir, why } => Error::UnsafeFolder {
            key: "QUARANTINE_DIR",
            what: "quarantine folder",
            dir,
            why,
        },
        e => e,
    })
}

/// What a backup, a restore and `validate` all check of the quarantine root before they rely on
/// it: when it exists, it is a private, real directory of this user (a journal planted in a
/// shared folder could name any file to rename over the database). Writes nothing.
pub fn check_quarantine(settings: &Settings) -> Result<()> {
    let root = quarantine_root(settings);
    match fs::symlink_metadata(&root) {
        Ok(_) => ensure_quarantine_dir(&root),
        Err(_) => Ok(()),
    }
}

/// Decides the names of a restore. Pure apart from looking at which WAL files exist.
pub fn plan(settings: &Settings, store: &Store, entry: &Entry, now: DateTime<Utc>) -> Plan {
    let database = settings.db_path.clone();
    let root = quarantine_root(settings);
    let base = format!("{}_restore", store::base_id(&settings.db_stem(), now));
    let mut quarantine = root.join(&base);
    let mut n = 2;
    while quarantine.exists() {
        quarantine = root.join(format!("{base}_{n}"));
        n += 1;
    }
    let name = |p: &Path| p.file_name().map(PathBuf::from).unwrap_or_default();
    let mut moves: Vec<(PathBuf, PathBuf)> = duck::wal_paths(&database)
        .into_iter()
        .filter(|w| fs::symlink_metadata(w).is_ok())
        .map(|w| {
            let to = quarantine.join(name(&w));
            (w, to)
        })
        .collect();
    if fs::symlink_metadata(&database).is_ok() {
        moves.push((database.clone(), quarantine.join(name(&database))));
    }
    let staged = files::parent_of(&database).join(format!(
        "{}{}-{}.duckdb",
        identity::staged_prefix(&database),
        std::process::id(),
        entry.id
    ));
    Plan {
        backup: store.backup_path(&entry.id),
        backup_id: entry.id.clone(),
        backup_sha256: entry.manifest.sha256.clone(),
        database,
        quarantine,
        staged,
        moves,
    }
}

/// Carries out a restore plan. The caller holds the backup directory's lock.
pub fn apply(plan: &Plan, entry: &Entry, limits: &Limits) -> Result<Outcome> {
    let started = std::time::Instant::now();
    let bad_backup = |why: String| Error::VerificationFailed {
        path: plan.backup.clone(),
        why,
    };
    // 1. Cheap refusals first: a backup whose size is not the manifest's is not copied at all.
    verify::check_size(&plan.backup, &entry.manifest).map_err(&bad_backup)?;

    // 2. Nobody may have the database open.
    let _db_lock = DatabaseLock::acquire_if_present(&plan.database)?;
    if already_the_backup(plan, entry) {
        // Nothing to put back: say so rather than replace the file by an identical copy.
        return Ok(Outcome {
            plan: plan.clone(),
            quarantined: Vec::new(),
            checks: vec!["size".to_owned(), "sha256".to_owned()],
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            unchanged: true,
            finished_journal: None,
        });
    }

    // 3. Stage the copy beside the database; the copy's read-back SHA-256 must be the
    //    manifest's (this is the backup's verification), and DuckDB must open it.
    let staged = Staged::create(plan, &entry.manifest.sha256)?;
    let opened = verify::inspect(&plan.staged, VerifyLevel::Quick, limits, &|e| {
        bad_backup(format!("DuckDB cannot open the copy: {e}"))
    })?;
    verify::compare_tables(&entry.manifest.tables, &opened.tables).map_err(&bad_backup)?;
    failpoint::hit("restore.staged");

    // 4. The intent, durable before anything moves.
    ensure_quarantine_dir(files::parent_of(&plan.quarantine))?;
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
    write_intent(&plan.quarantine, &intent)?;
    // Beside the database, where every later command looks whatever its configuration says:
    // which journal holds this restore, until it is closed.
    write_marker(&plan.database, &plan.quarantine.join(INTENT))?;
    staged.keep();
    failpoint::hit("restore.intent");

    // 5–6. Quarantine, then the atomic switch. From here on the journal speaks for the restore.
    let journal = plan.quarantine.join(INTENT);
    let quarantined = complete(&intent, &journal).map_err(|e| Error::RestoreFailed {
        database: plan.database.clone(),
        why: format!(
            "{e}; the journal `{}` records this restore: the next `ducksafe restore` or backup completes it, or, if its staged copy is gone, puts the database back exactly as it was",
            journal.display()
        ),
    })?;
    intent.state = "done".into();
    let closed = write_intent(&plan.quarantine, &intent);
    if closed.is_ok() {
        remove_marker(&plan.database);
    }
    closed.map_err(|e| Error::RestoreFailed {
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
    let checks = vec![
        "size".to_owned(),
        "sha256".to_owned(),
        "open".to_owned(),
        "tables".to_owned(),
    ];
    Ok(Outcome {
        plan: plan.clone(),
        quarantined,
        checks,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        unchanged: false,
        finished_journal: None,
    })
}

/// Whether the database already is the backup: no WAL file beside it, and its bytes and the
/// backup's are the manifest's (SHA-256; read only when the sizes match). A damaged backup is
/// never "already there": the normal path then refuses it. The caller holds the database's
/// exclusive lock.
fn already_the_backup(plan: &Plan, entry: &Entry) -> bool {
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
            let backup = s.spawn(|| is_backup(&plan.backup));
            is_backup(&plan.database) && backup.join().unwrap_or(false)
        })
}

/// The staged copy; removed on drop unless kept. It holds an OFD read lock on the copy for as
/// long as this process works on it: the cleanup of another run removes a staged copy only
/// when it can take a write lock on it, that is, when the process that made it is gone (DuckDB's
/// read-only open of the copy is still let in).
struct Staged<'a> {
    path: &'a Path,
    keep: std::cell::Cell<bool>,
    lock: fs::File,
}

impl<'a> Staged<'a> {
    fn create(plan: &'a Plan, sha256: &str) -> Result<Staged<'a>> {
        let from = files::open_read_nofollow(&plan.backup)
            .map_err(|e| Error::io("read backup", &plan.backup, e))?;
        let to = files::create_private(&plan.staged)
            .map_err(|e| Error::io("stage the restore at", &plan.staged, e))?;
        let lock = to
            .try_clone()
            .map_err(|e| Error::io("stage the restore at", &plan.staged, e))?;
        let staged = Staged {
            path: &plan.staged,
            keep: std::cell::Cell::new(false),
            lock,
        };
        files::try_lock(&staged.lock, files::LockKind::Read).map_err(|e| {
            Error::io(
                "lock the staged copy",
                &plan.staged,
                match e {
                    files::LockError::Io(e) => e,
                    files::LockError::Conflict { .. } => {
                        std::io::Error::other("another process locked it")
                    }
                },
            )
        })?;
        let copied = files::copy_verified(&from, &to, || {})
            .map_err(|e| Error::io("stage the restore at", &plan.staged, e))?;
        if let Some(at) = copied.first_difference {
            // The staged copy, not the backup, is what the disk gave back wrong.
            return Err(Error::VerificationFailed {
                path: plan.staged.clone(),
                why: format!(
                    "the staged copy read back differs from the backup at byte {at}; check the storage of the database's folder"
                ),
            });
        }
        let got = files::hex(&copied.sha256);
        if !copied.identical() || got != sha256 {
            return Err(Error::VerificationFailed {
                path: plan.backup.clone(),
                why: format!("its SHA-256 is {got}, the manifest says {sha256}"),
            });
        }
        Ok(staged)
    }
    fn keep(&self) {
        self.keep.set(true);
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if !self.keep.get() {
            let _ = fs::remove_file(self.path);
        }
    }
}

/// The marker beside a database that names the journal of its restore in progress:
/// `.<file>.ducksafe-restore`.
pub fn marker_path(db: &Path) -> PathBuf {
    let name = db
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    files::parent_of(db).join(format!(".{name}.ducksafe-restore"))
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    journal: PathBuf,
}

fn write_marker(db: &Path, journal: &Path) -> Result<()> {
    let path = marker_path(db);
    files::write_json_atomic(
        &path,
        &Marker {
            journal: journal.to_path_buf(),
        },
    )
    .map_err(|e| Error::io("write restore marker", &path, e))
}

fn remove_marker(db: &Path) {
    let path = marker_path(db);
    if fs::remove_file(&path).is_ok() {
        let _ = files::sync_dir(files::parent_of(&path));
    }
}

/// The restore was undone by hand with the printed lines, which rename its journal.
fn undone_by_hand(marker: &Marker) -> bool {
    let undone = marker.journal.with_file_name(format!("{INTENT}.undone"));
    fs::symlink_metadata(&marker.journal).is_err() && fs::symlink_metadata(undone).is_ok()
}

/// Why the marker's journal cannot be read, with the way out when it is gone for good.
fn lost_journal(marker: &Path, journal: &Path) -> String {
    format!(
        "its journal `{}` is not there (moved with the project, another quarantine folder, or deleted by hand). If it was deleted: the database may be the old file without its WAL, which is in `{}` if it had one; with nothing using the database, move any `*.wal*` file from there back beside the database, then `rm {}`",
        journal.display(),
        files::parent_of(journal).display(),
        shell_quote(marker)
    )
}

/// The marker beside the database when no journal can be reported for it (gone, or not
/// readable): what `list` and `validate` say first, since every backup and restore refuses
/// meanwhile. Reads only.
pub fn marker_trouble(settings: &Settings) -> Option<String> {
    let path = marker_path(&settings.db_path);
    let marker: Marker = serde_json::from_slice(&fs::read(&path).ok()?).ok()?;
    if undone_by_hand(&marker) {
        return None;
    }
    let journal = fs::read(&marker.journal).ok();
    match journal.and_then(|b| serde_json::from_slice::<Intent>(&b).ok()) {
        Some(_) => None,
        None => Some(format!(
            "UNFINISHED RESTORE recorded in `{}`: {}",
            path.display(),
            lost_journal(&path, &marker.journal)
        )),
    }
}

/// A restore of this database still open in a journal the caller could not reach (another
/// quarantine folder, or a project moved since): refused, so that nothing backs up, sweeps or
/// restores a database whose WAL may sit in that journal's folder. A closed journal's marker is
/// removed.
pub fn check_marker(settings: &Settings) -> Result<()> {
    let path = marker_path(&settings.db_path);
    let Ok(bytes) = fs::read(&path) else {
        return Ok(());
    };
    let refuse = |why: String| {
        Error::RestoreFailed {
        database: settings.db_path.clone(),
        why: format!(
            "an unfinished restore of this database is recorded in `{}`: {why}; nothing was changed. Finish it with the configuration it was started with (the same BACKUP_DIR and QUARANTINE_DIR, the project where it was), then run this again (docs/runbook.md, 'An interrupted restore')",
            path.display()
        ),
    }
    };
    let Ok(marker) = serde_json::from_slice::<Marker>(&bytes) else {
        return Err(refuse("the marker does not parse".into()));
    };
    if undone_by_hand(&marker) {
        remove_marker(&settings.db_path);
        return Ok(());
    }
    let Ok(journal) = fs::read(&marker.journal) else {
        return Err(refuse(lost_journal(&path, &marker.journal)));
    };
    match serde_json::from_slice::<Intent>(&journal) {
        Ok(i) if i.state != "prepared" => {
            remove_marker(&settings.db_path);
            Ok(())
        }
        Ok(i) if !same_entry(&i.database, &settings.db_path) => Err(refuse(format!(
            "its journal `{}` was written for `{}`",
            marker.journal.display(),
            i.database.display()
        ))),
        Ok(_) => Err(refuse(format!(
            "its journal `{}` lies outside this configuration's quarantine folder `{}`",
            marker.journal.display(),
            quarantine_root(settings).display()
        ))),
        Err(_) => Err(refuse(format!(
            "its journal `{}` does not parse",
            marker.journal.display()
        ))),
    }
}

fn write_intent(quarantine: &Path, intent: &Intent) -> Result<()> {
    let path = quarantine.join(INTENT);
    files::write_json_atomic(&path, intent)
        .map_err(|e| Error::io("write restore journal", &path, e))
}

/// Whether the rename of the staged copy over the database happened: told by the files'
/// identities (the quarantined hard link is the old database), never by their bytes.
fn switched(intent: &Intent) -> bool {
    use std::os::unix::fs::MetadataExt;
    let db = fs::symlink_metadata(&intent.database);
    match intent
        .moves
        .iter()
        .find(|(from, _)| *from == intent.database)
    {
        // The database existed: it was switched when it is no longer the file linked into
        // quarantine (no link yet means it was never touched).
        Some((_, link)) => match (db, fs::symlink_metadata(link)) {
            (Ok(d), Ok(l)) => (d.dev(), d.ino()) != (l.dev(), l.ino()),
            _ => false,
        },
        // There was no database: whatever is there now came from the switch.
        None => db.is_ok(),
    }
}

/// Steps 5 and 6 from a durable intent; safe to run again after a crash at any point. The
/// staged copy must exist unless the switch already happened.
fn complete(intent: &Intent, journal: &Path) -> Result<Vec<PathBuf>> {
    let existing = |moves: &[(PathBuf, PathBuf)]| -> Vec<PathBuf> {
        moves
            .iter()
            .filter(|(_, to)| fs::symlink_metadata(to).is_ok())
            .map(|(_, to)| to.clone())
            .collect()
    };
    if fs::symlink_metadata(&intent.staged).is_err() {
        if switched(intent) {
            // Renamed into place before the crash: the restore is done and only its journal was
            // left open. A database changed since holds later runs' work: kept, never undone.
            let is_backup = files::hash_file(&intent.database)
                .is_ok_and(|h| files::hex(&h.sha256) == intent.backup_sha256);
            if !is_backup {
                tracing::warn!(
                    "backup `{}` was put in place before the interruption and the database has changed since; those later changes are kept",
                    intent.backup_id
                );
            }
            return Ok(existing(&intent.moves));
        }
        return Err(stuck(
            intent,
            journal,
            &format!(
                "its staged copy of backup `{}` is gone and the database was never switched",
                intent.backup_id
            ),
        ));
    }
    // The database first, by hard link: its path never disappears, and until its WAL moves
    // it is still whole.
    for (from, to) in &intent.moves {
        if *from == intent.database && fs::symlink_metadata(to).is_err() {
            fs::hard_link(from, to).map_err(|e| Error::io("quarantine", from, e))?;
        }
    }
    for (from, to) in &intent.moves {
        if *from != intent.database
            && fs::symlink_metadata(to).is_err()
            && fs::symlink_metadata(from).is_ok()
        {
            fs::rename(from, to).map_err(|e| Error::io("quarantine", from, e))?;
        }
    }
    let mut quarantined = existing(&intent.moves);
    // A WAL that appeared after the plan (a process that opened the database between a crash
    // and this recovery) must not end up beside the restored file either: quarantine it too.
    let qdir = intent
        .moves
        .first()
        .map(|(_, to)| files::parent_of(to).to_path_buf());
    if let Some(qdir) = &qdir {
        for wal in duck::wal_paths(&intent.database) {
            if fs::symlink_metadata(&wal).is_err() {
                continue;
            }
            let name = wal.file_name().map(PathBuf::from).unwrap_or_default();
            let mut to = qdir.join(&name);
            let mut n = 1;
            while fs::symlink_metadata(&to).is_ok() {
                to = qdir.join(format!("{}.late{n}", name.display()));
                n += 1;
            }
            fs::rename(&wal, &to).map_err(|e| Error::io("quarantine", &wal, e))?;
            quarantined.push(to);
        }
        files::sync_dir(qdir).map_err(|e| Error::io("sync", qdir, e))?;
    }
    files::sync_dir(files::parent_of(&intent.database))
        .map_err(|e| Error::io("sync", &intent.database, e))?;
    failpoint::hit("restore.quarantined");
    files::rename_durable(&intent.staged, &intent.database)
        .map_err(|e| Error::io("move restored copy into place at", &intent.database, e))?;
    failpoint::hit("restore.renamed");
    Ok(quarantined)
}

/// Whether two paths name the same directory entry (parents compared after resolving links).
fn same_entry(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    let canon = |p: &Path| {
        fs::canonicalize(files::parent_of(p))
            .ok()
            .map(|d| d.join(p.file_name().unwrap_or_default()))
    };
    matches!((canon(a), canon(b)), (Some(x), Some(y)) if x == y)
}

/// Whether an interrupted restore lost its staged copy before the switch: the copy is gone and
/// the database is still the file linked into quarantine (inode identity, not bytes: a database
/// that happens to equal the backup is no reason to call the restore done). Such a restore can
/// only be rolled back.
fn lost_staged_copy(intent: &Intent) -> bool {
    fs::symlink_metadata(&intent.staged).is_err() && !switched(intent)
}

/// Puts the database back exactly as it was before an interrupted restore that lost its staged
/// copy. The main file never left its path (it was only hard-linked into quarantine), so the
/// WAL files moved into quarantine go back beside it. Checks everything first and changes
/// nothing when the result would not be the previous state (the journal then stays `prepared`).
/// Returns the files put back.
fn roll_back(intent: &Intent) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |why: String| {
        Error::RestoreFailed {
        database: intent.database.clone(),
        why: format!(
            "an interrupted restore of backup `{}` lost its staged copy and cannot be rolled back: {why}; nothing was changed, the quarantined files are listed in its journal (see docs/runbook.md, 'Restore failed')",
            intent.backup_id
        ),
    }
    };
    let mut relink = None;
    if let Some((_, linked)) = intent.moves.iter().find(|(f, _)| *f == intent.database) {
        match (
            fs::symlink_metadata(&intent.database),
            fs::symlink_metadata(linked),
        ) {
            (Ok(a), Ok(b)) if a.ino() != b.ino() || a.dev() != b.dev() => {
                return Err(refuse(format!(
                    "`{}` is no longer the file that was quarantined as `{}`",
                    intent.database.display(),
                    linked.display()
                )))
            }
            (Err(_), Ok(_)) => relink = Some(linked.clone()),
            (Err(_), Err(_)) => {
                return Err(refuse("the database is gone, and not in quarantine".into()))
            }
            _ => {}
        }
    }
    let back: Vec<&(PathBuf, PathBuf)> = intent
        .moves
        .iter()
        .filter(|(from, to)| *from != intent.database && fs::symlink_metadata(to).is_ok())
        .collect();
    if let Some((from, _)) = back
        .iter()
        .find(|(from, _)| fs::symlink_metadata(from).is_ok())
    {
        return Err(refuse(format!(
            "`{}` appeared beside the database after the crash, and its quarantined namesake cannot go back over it",
            from.display()
        )));
    }
    let mut returned = Vec::new();
    if let Some(linked) = relink {
        fs::hard_link(&linked, &intent.database)
            .map_err(|e| Error::io("put back", &intent.database, e))?;
        returned.push(intent.database.clone());
    }
    for (from, to) in back {
        fs::rename(to, from).map_err(|e| Error::io("put back", from, e))?;
        returned.push(from.clone());
    }
    files::sync_dir(files::parent_of(&intent.database))
        .map_err(|e| Error::io("sync", &intent.database, e))?;
    Ok(returned)
}

/// The command that finishes an interrupted restore of `backup_id` for this configuration.
/// The one command that finishes an interrupted restore: the rollback's own restore command
/// (this binary by its absolute path, every key that decided the database pinned, the backup's
/// SHA-256 expected), so that it acts on this database in a fresh shell whatever its
/// environment says.
fn finish_command(settings: &Settings, intent: &Intent) -> String {
    crate::rollback::restore_line(settings, &intent.backup_id, &intent.backup_sha256)
}

/// Shell commands that undo an interrupted restore: what was moved goes back (the database
/// first), and the journal is closed so that no later command finishes it.
fn undo_interrupted(intent: &Intent, journal: &Path) -> Vec<String> {
    let was_switched = switched(intent);
    let moved: Vec<PathBuf> = intent
        .moves
        .iter()
        .filter(|(from, to)| {
            fs::symlink_metadata(to).is_ok() && (*from != intent.database || was_switched)
        })
        .map(|(_, to)| to.clone())
        .collect();
    let mut lines = undo_moves(&intent.database, &intent.moves, &moved);
    lines.push(format!(
        "mv {} {}",
        shell_quote(journal),
        shell_quote(&journal.with_file_name(format!("{INTENT}.undone")))
    ));
    lines
}

/// Where an interrupted restore stopped, for people.
fn describe(intent: &Intent) -> String {
    if switched(intent) {
        return format!(
            "backup `{}` was put in place (the restore's last step was done) and only its journal was not closed; if the database was used since, it holds those later changes too",
            intent.backup_id
        );
    }
    let moved: Vec<&PathBuf> = intent
        .moves
        .iter()
        .filter(|(from, to)| *from != intent.database && fs::symlink_metadata(to).is_ok())
        .map(|(_, to)| to)
        .collect();
    let mut state = match moved.first() {
        None => "nothing was moved yet: the database and its WAL files are as they were".to_owned(),
        Some(first) => format!(
            "the database is the OLD file WITHOUT its WAL (moved to `{}`): do not open it or run anything on it",
            files::parent_of(first).display()
        ),
    };
    if fs::symlink_metadata(&intent.staged).is_err() {
        state.push_str(
            "; its staged copy is gone, so the next restore or backup rolls it back (the database as it was before it)",
        );
    }
    state
}

/// Interrupted restores of this database (journal `prepared`), without touching anything: what
/// `list`, `validate`, dry runs and failed commands report first.
pub fn pending(settings: &Settings) -> Vec<Pending> {
    let root = quarantine_root(settings);
    // Journals are only believed from a private, real directory (as `recover` requires).
    let private = fs::symlink_metadata(&root)
        .is_ok_and(|m| !m.file_type().is_symlink() && files::unsafe_dir_reason(&m).is_none());
    let mut dirs: Vec<PathBuf> = if private {
        fs::read_dir(&root)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    dirs.sort();
    // The journal the marker beside the database names, wherever it is (another quarantine
    // folder then): reported too, with the way to finish it.
    let elsewhere = fs::read(marker_path(&settings.db_path))
        .ok()
        .and_then(|b| serde_json::from_slice::<Marker>(&b).ok())
        .and_then(|m| m.journal.parent().map(Path::to_path_buf))
        .filter(|d| !dirs.contains(d));
    dirs.extend(elsewhere.clone());
    dirs.into_iter()
        .filter_map(|dir| {
            let journal = dir.join(INTENT);
            let intent: Intent = serde_json::from_slice(&fs::read(&journal).ok()?).ok()?;
            (intent.state == "prepared" && same_entry(&intent.database, &settings.db_path)).then(
                || Pending {
                    backup_id: intent.backup_id.clone(),
                    quarantine: dir.clone(),
                    started_at: intent.started_at,
                    state: describe(&intent),
                    finish: if elsewhere.as_ref() == Some(&dir) {
                        // Its quarantine folder is not this configuration's: pinned, so that
                        // the command works as printed.
                        format!(
                            "{} --set {}",
                            finish_command(settings, &intent),
                            shell_quote(Path::new(&format!(
                                "QUARANTINE_DIR={}",
                                files::parent_of(&dir).display()
                            )))
                        )
                    } else {
                        finish_command(settings, &intent)
                    },
                    undo: undo_interrupted(&intent, &journal),
                    journal,
                },
            )
        })
        .collect()
}

/// The error for an interrupted restore that can be neither finished nor undone here: the
/// journal, what happened, and the exact commands out.
fn stuck(intent: &Intent, journal: &Path, what: &str) -> Error {
    Error::RestoreFailed {
        database: intent.database.clone(),
        why: format!(
            "an interrupted restore of backup `{}` (journal `{}`) cannot be finished: {what}. To put the database back as it was before that restore and close the journal (with nothing using the database): `{}`; then retry",
            intent.backup_id,
            journal.display(),
            undo_interrupted(intent, journal).join(" && ")
        ),
    }
}

/// What [`recover_all`] did.
struct Recovery {
    finished: Vec<Finished>,
    /// One line per action taken.
    notes: Vec<String>,
}

/// Finishes restores that a crash interrupted (intent `prepared`): completes them, or rolls back
/// one whose staged copy was lost. Then removes this database's staged copies that no process
/// works on any more. Returns one line per action taken.
pub fn recover(settings: &Settings) -> Result<Vec<String>> {
    recover_all(settings).map(|r| r.notes)
}

fn recover_all(settings: &Settings) -> Result<Recovery> {
    let mut done = Vec::new();
    let mut finished = Vec::new();
    let root = quarantine_root(settings);
    // Journals are only trusted from a private, real directory: a planted one could name any
    // file to rename over the database.
    check_quarantine(settings)?;
    if let Ok(rd) = fs::read_dir(&root) {
        let mut dirs: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        dirs.sort();
        for dir in dirs {
            let path = dir.join(INTENT);
            let Ok(bytes) = fs::read(&path) else { continue };
            let Ok(mut intent) = serde_json::from_slice::<Intent>(&bytes) else {
                continue;
            };
            if intent.state != "prepared" || !same_entry(&intent.database, &settings.db_path) {
                // Done, or another database's: not ours to finish.
                continue;
            }
            // Nobody may have the database open while the interrupted restore is finished.
            let _db_lock = DatabaseLock::acquire_if_present(&intent.database)?;
            if lost_staged_copy(&intent) {
                let returned = roll_back(&intent).map_err(|e| match e {
                    Error::RestoreFailed { database, why } => Error::RestoreFailed {
                        database,
                        why: format!(
                            "{why}. Journal `{}`; to put back by hand what was moved and close it (with nothing using the database, after checking the files): `{}`",
                            path.display(),
                            undo_interrupted(&intent, &path).join(" && ")
                        ),
                    },
                    e => e,
                })?;
                intent.state = "rolled_back".into();
                write_intent(&dir, &intent)?;
                remove_marker(&intent.database);
                done.push(format!(
                    "an interrupted restore of backup `{}` had lost its staged copy: it was rolled back, the database is as it was before it ({} file(s) put back from `{}`; journal `{}`)",
                    intent.backup_id,
                    returned.len(),
                    dir.display(),
                    path.display()
                ));
                continue;
            }
            let quarantined = complete(&intent, &path)?;
            intent.state = "done".into();
            write_intent(&dir, &intent)?;
            remove_marker(&intent.database);
            let undo = undo_moves(&intent.database, &intent.moves, &quarantined);
            done.push(format!(
                "completed an interrupted restore of backup `{}` (journal `{}`); the database it replaced is in `{}`{}",
                intent.backup_id,
                path.display(),
                dir.display(),
                if undo.is_empty() {
                    String::new()
                } else {
                    format!(" (undo: {})", undo.join(" && "))
                }
            ));
            finished.push(Finished {
                intent,
                journal: path,
                quarantined,
            });
        }
    }
    // A journal of this database that the scan above could not reach: stop here, before the
    // staged copy it still needs is taken for a leftover.
    check_marker(settings)?;
    // Staged copies of this database's restores that crashed before their intent was written
    // (with an intent, the restore was completed above). Only names with this database's tag,
    // and only when no process holds the copy's lock.
    let db_dir = files::parent_of(&settings.db_path);
    let prefix = identity::staged_prefix(&settings.db_path);
    if let Ok(rd) = fs::read_dir(db_dir) {
        for e in rd.filter_map(std::result::Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix)
                && abandoned(&e.path())
                && fs::remove_file(e.path()).is_ok()
            {
                done.push(format!("removed the leftover `{}`", e.path().display()));
            }
        }
    }
    Ok(Recovery {
        finished,
        notes: done,
    })
}

/// Refuses, changing nothing, a backup whose content is not the one a rollback instruction was
/// written for (`expected`, its SHA-256): an id that came to name other content.
pub fn check_expected(settings: &Settings, entry: &Entry, expected: Option<&str>) -> Result<()> {
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

/// Whether a staged copy is abandoned: no live process holds its lock. A symlink under a staged
/// name was never made by ducksafe: it is unlinked, never followed.
fn abandoned(path: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => true,
        Ok(m) if m.file_type().is_file() => fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .is_ok_and(|f| files::try_lock(&f, files::LockKind::Write).is_ok()),
        _ => false,
    }
}

/// Plans the restore of `selector` with the same refusals as [`run`] (a symlinked `DB_PATH`, an
/// unsafe quarantine folder, another database's backup directory, a backup that is not this
/// database's), writing nothing.
pub fn dry_run(
    settings: &Settings,
    selector: &str,
    expect_sha256: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Plan> {
    identity::database_path(settings)?;
    check_quarantine(settings)?;
    let store = Store::open(&settings.backup_dir, false)?;
    let _lock = DirLock::acquire_for_restore(store.dir())?;
    let owner = identity::check(store.dir(), settings)?;
    let store = store.owned_by(owner);
    let entry = store.resolve(selector)?;
    check_expected(settings, &entry, expect_sha256)?;
    Ok(plan(settings, &store, &entry, now))
}

/// Restores the backup `selector` names (`latest`, an id, a path): takes the backup
/// directory's lock, finishes any interrupted restore first, then plans and applies. When the
/// interrupted restore was of the requested backup, finishing it is the restore: the database
/// is not replaced a second time, and the undo lines name the files it really replaced.
/// Returns the backup's manifest, the outcome, and notes about recovered leftovers.
pub fn run(
    settings: &Settings,
    selector: &str,
    expect_sha256: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(super::manifest::Manifest, Outcome, Vec<String>)> {
    let started = std::time::Instant::now();
    identity::database_path(settings)?;
    let store = Store::open(&settings.backup_dir, false)?;
    let lock = DirLock::acquire_for_restore(store.dir())?;
    // Only this database's backups: `latest`, an id or a path never reaches another's.
    let owner = identity::check(store.dir(), settings)?;
    let store = store.owned_by(owner);
    // A guarded run in progress writes the database until its own post_run: only that run's
    // caller may restore now. Another restore (an older run's rollback, an operator's command)
    // would erase its work (`lease`).
    super::lease::check(store.dir())?;
    if lock.is_some() {
        // Sweep what an interrupted run left (nothing to sweep on read-only media).
        store.clean_leftovers(false)?;
    }
    let recovery = recover_all(settings)?;
    let mut notes = recovery.notes;
    let entry = store.resolve(selector)?;
    check_expected(settings, &entry, expect_sha256)?;
    if let Some(f) = recovery
        .finished
        .iter()
        .rev()
        .find(|f| f.intent.backup_id == entry.id)
    {
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
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            unchanged: false,
            finished_journal: Some(f.journal.clone()),
        };
        notes.retain(|n| !n.starts_with("completed an interrupted restore"));
        return Ok((entry.manifest, outcome, notes));
    }
    let plan = plan(settings, &store, &entry, now);
    let limits = crate::engine::backup::limits(settings);
    let outcome = apply(&plan, &entry, &limits)?;
    Ok((entry.manifest, outcome, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_puts_the_database_back_before_its_wal_and_leaves_late_files() {
        let db = PathBuf::from("/d/sim.duckdb");
        let q = PathBuf::from("/q");
        let moves = vec![
            (PathBuf::from("/d/sim.duckdb.wal"), q.join("sim.duckdb.wal")),
            (db.clone(), q.join("sim.duckdb")),
        ];
        let quarantined = vec![
            q.join("sim.duckdb.wal"),
            q.join("sim.duckdb"),
            q.join("sim.duckdb.wal.late1"),
        ];
        assert_eq!(
            undo_moves(&db, &moves, &quarantined),
            [
                "mv -f /q/sim.duckdb /d/sim.duckdb",
                "mv -f /q/sim.duckdb.wal /d/sim.duckdb.wal"
            ]
        );
        // Only what was really moved is put back.
        assert_eq!(
            undo_moves(&db, &moves, &[q.join("sim.duckdb.wal")]),
            ["mv -f /q/sim.duckdb.wal /d/sim.duckdb.wal"]
        );
    }

    #[test]
    fn shell_quote_is_safe() {
        assert_eq!(shell_quote(Path::new("/a/b.duckdb")), "/a/b.duckdb");
        assert_eq!(shell_quote(Path::new("/a b/it's")), "'/a b/it'\\''s'");
    }
}
