//! The journal of a restore (`restore.json` in its quarantine folder), and what every command
//! does about a restore that was interrupted: report it ([`pending`]), finish it or roll it
//! back ([`recover`]), or refuse while it cannot be reached ([`check_marker`]).
//!
//! A restore writes its intent (state `prepared`) before anything of the database moves, and a
//! marker beside the database (`.<file>.ducksafe-restore`) that names the journal, wherever the
//! configuration says the quarantine folder is. [`Intent::complete`] carries out the moves and
//! the switch from the intent alone, so a crash at any point is finished by running it again.
//!
//! Invariants:
//! - Journals are read by one scan ([`scan`]) and trusted only from a private, real quarantine
//!   root: a journal planted in a shared folder could name any file to rename over the database.
//!   The marker's journal elsewhere is reported, never acted on: the commands refuse until the
//!   configuration that started it finishes it.
//! - Whether the switch happened is told by inode identity (the quarantined hard link is the
//!   old database), never by the database's bytes.
//! - An interrupted restore whose staged copy was lost before the switch is rolled back, never
//!   half-finished: the main file never left its path, and the WAL files come back from
//!   quarantine. Nothing is ever deleted; a stale WAL never stays beside a restored database.
//! - Recovery in a dry run takes the same locks and makes the same checks, and writes nothing.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::lock::DatabaseLock;
use super::{database, quarantine, shell, staging};
use crate::config::Settings;
use crate::duck;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::files;

/// Name of the journal in a quarantine folder.
pub const INTENT: &str = "restore.json";

/// The state of a journal whose restore is under way (or was interrupted).
const PREPARED: &str = "prepared";

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

impl Intent {
    /// Writes the intent (`prepared`) in its quarantine folder, durably, then the marker beside
    /// the database that names it. Returns the journal's path.
    pub fn begin(&self, quarantine: &Path) -> Result<PathBuf> {
        write(quarantine, self)?;
        let journal = quarantine.join(INTENT);
        write_marker(&self.database, &journal)?;
        Ok(journal)
    }

    /// Closes the journal in `state` (`done`, `rolled_back`), then removes the marker.
    pub fn close(&mut self, quarantine: &Path, state: &str) -> Result<()> {
        state.clone_into(&mut self.state);
        write(quarantine, self)?;
        remove_marker(&self.database);
        Ok(())
    }

    /// Whether the rename of the staged copy over the database happened.
    fn switched(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let db = fs::symlink_metadata(&self.database);
        match self.moves.iter().find(|(from, _)| *from == self.database) {
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

    /// Whether the restore lost its staged copy before the switch: then it can only be rolled
    /// back (inode identity, not bytes: a database that happens to equal the backup is no
    /// reason to call the restore done).
    fn lost_staged_copy(&self) -> bool {
        fs::symlink_metadata(&self.staged).is_err() && !self.switched()
    }

    /// The quarantined files the moves produced so far.
    fn quarantined(&self) -> Vec<PathBuf> {
        self.moves
            .iter()
            .filter(|(_, to)| fs::symlink_metadata(to).is_ok())
            .map(|(_, to)| to.clone())
            .collect()
    }

    /// Quarantine, then the atomic switch, from the durable intent; safe to run again after a
    /// crash at any point. The staged copy must exist unless the switch already happened.
    /// Returns the quarantined files.
    pub fn complete(&self, journal: &Path) -> Result<Vec<PathBuf>> {
        if fs::symlink_metadata(&self.staged).is_err() {
            if self.switched() {
                // Renamed into place before the crash: the restore is done and only its
                // journal was left open. A database changed since holds later runs' work:
                // kept, never undone.
                let is_backup = files::hash_file(&self.database)
                    .is_ok_and(|h| files::hex(&h.sha256) == self.backup_sha256);
                if !is_backup {
                    tracing::warn!(
                        "backup `{}` was put in place before the interruption and the database has changed since; those later changes are kept",
                        self.backup_id
                    );
                }
                return Ok(self.quarantined());
            }
            return Err(self.stuck(
                journal,
                &format!(
                    "its staged copy of backup `{}` is gone and the database was never switched",
                    self.backup_id
                ),
            ));
        }
        // The database first, by hard link: its path never disappears, and until its WAL moves
        // it is still whole.
        for (from, to) in &self.moves {
            if *from == self.database && fs::symlink_metadata(to).is_err() {
                fs::hard_link(from, to).map_err(|e| Error::io("quarantine", from, e))?;
            }
        }
        for (from, to) in &self.moves {
            if *from != self.database
                && fs::symlink_metadata(to).is_err()
                && fs::symlink_metadata(from).is_ok()
            {
                fs::rename(from, to).map_err(|e| Error::io("quarantine", from, e))?;
            }
        }
        let mut quarantined = self.quarantined();
        // A WAL that appeared after the plan (a process that opened the database between a
        // crash and this recovery) must not end up beside the restored file either: quarantine
        // it too.
        let qdir = self
            .moves
            .first()
            .map(|(_, to)| files::parent_of(to).to_path_buf());
        if let Some(qdir) = &qdir {
            for wal in duck::wal_paths(&self.database) {
                if fs::symlink_metadata(&wal).is_err() {
                    continue;
                }
                let name = files::file_name(&wal);
                let mut to = qdir.join(&name);
                let mut n = 1;
                while fs::symlink_metadata(&to).is_ok() {
                    to = qdir.join(format!("{name}.late{n}"));
                    n += 1;
                }
                fs::rename(&wal, &to).map_err(|e| Error::io("quarantine", &wal, e))?;
                quarantined.push(to);
            }
            files::sync_dir(qdir).map_err(|e| Error::io("sync", qdir, e))?;
        }
        files::sync_dir(files::parent_of(&self.database))
            .map_err(|e| Error::io("sync", &self.database, e))?;
        failpoint::hit("restore.quarantined");
        files::rename_durable(&self.staged, &self.database)
            .map_err(|e| Error::io("move restored copy into place at", &self.database, e))?;
        failpoint::hit("restore.renamed");
        Ok(quarantined)
    }

    /// Puts the database back exactly as it was before an interrupted restore that lost its
    /// staged copy. The main file never left its path (it was only hard-linked into
    /// quarantine), so the WAL files moved into quarantine go back beside it. Checks everything
    /// first and changes nothing when the result would not be the previous state (the journal
    /// then stays `prepared`), nor in a dry run. Returns the files put back (or that would be).
    fn roll_back(&self, dry_run: bool) -> Result<Vec<PathBuf>> {
        use std::os::unix::fs::MetadataExt;
        let refuse = |why: String| {
            Error::RestoreFailed {
            database: self.database.clone(),
            why: format!(
                "an interrupted restore of backup `{}` lost its staged copy and cannot be rolled back: {why}; nothing was changed, the quarantined files are listed in its journal (see docs/runbook.md, 'Restore failed')",
                self.backup_id
            ),
        }
        };
        let mut relink = None;
        if let Some((_, linked)) = self.moves.iter().find(|(f, _)| *f == self.database) {
            match (
                fs::symlink_metadata(&self.database),
                fs::symlink_metadata(linked),
            ) {
                (Ok(a), Ok(b)) if a.ino() != b.ino() || a.dev() != b.dev() => {
                    return Err(refuse(format!(
                        "`{}` is no longer the file that was quarantined as `{}`",
                        self.database.display(),
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
        let back: Vec<&(PathBuf, PathBuf)> = self
            .moves
            .iter()
            .filter(|(from, to)| *from != self.database && fs::symlink_metadata(to).is_ok())
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
        if dry_run {
            let mut would: Vec<PathBuf> = relink.iter().map(|_| self.database.clone()).collect();
            would.extend(back.iter().map(|(from, _)| from.clone()));
            return Ok(would);
        }
        let mut returned = Vec::new();
        if let Some(linked) = relink {
            fs::hard_link(&linked, &self.database)
                .map_err(|e| Error::io("put back", &self.database, e))?;
            returned.push(self.database.clone());
        }
        for (from, to) in back {
            fs::rename(to, from).map_err(|e| Error::io("put back", from, e))?;
            returned.push(from.clone());
        }
        files::sync_dir(files::parent_of(&self.database))
            .map_err(|e| Error::io("sync", &self.database, e))?;
        Ok(returned)
    }

    /// The error for an interrupted restore that can be neither finished nor undone here: the
    /// journal, what happened, and the exact commands out.
    fn stuck(&self, journal: &Path, what: &str) -> Error {
        Error::RestoreFailed {
            database: self.database.clone(),
            why: format!(
                "an interrupted restore of backup `{}` (journal `{}`) cannot be finished: {what}. To put the database back as it was before that restore and close the journal (with nothing using the database): `{}`; then retry",
                self.backup_id,
                journal.display(),
                self.undo(journal).join(" && ")
            ),
        }
    }

    /// Shell commands that undo an interrupted restore: what was moved goes back (the database
    /// first), and the journal is closed so that no later command finishes it.
    fn undo(&self, journal: &Path) -> Vec<String> {
        let was_switched = self.switched();
        let moved: Vec<PathBuf> = self
            .moves
            .iter()
            .filter(|(from, to)| {
                fs::symlink_metadata(to).is_ok() && (*from != self.database || was_switched)
            })
            .map(|(_, to)| to.clone())
            .collect();
        let mut lines = shell::put_back(&self.database, &self.moves, &moved);
        lines.push(format!(
            "mv {} {}",
            shell::quote(journal),
            shell::quote(&journal.with_file_name(format!("{INTENT}.undone")))
        ));
        lines
    }

    /// Where an interrupted restore stopped, for people.
    fn describe(&self) -> String {
        if self.switched() {
            return format!(
                "backup `{}` was put in place (the restore's last step was done) and only its journal was not closed; if the database was used since, it holds those later changes too",
                self.backup_id
            );
        }
        let moved: Vec<&PathBuf> = self
            .moves
            .iter()
            .filter(|(from, to)| *from != self.database && fs::symlink_metadata(to).is_ok())
            .map(|(_, to)| to)
            .collect();
        let mut state = match moved.first() {
            None => {
                "nothing was moved yet: the database and its WAL files are as they were".to_owned()
            }
            Some(first) => format!(
                "the database is the OLD file WITHOUT its WAL (moved to `{}`): do not open it or run anything on it",
                files::parent_of(first).display()
            ),
        };
        if fs::symlink_metadata(&self.staged).is_err() {
            state.push_str(
                "; its staged copy is gone, so the next restore or backup rolls it back (the database as it was before it)",
            );
        }
        state
    }
}

fn write(quarantine: &Path, intent: &Intent) -> Result<()> {
    let path = quarantine.join(INTENT);
    files::write_json_atomic(&path, intent)
        .map_err(|e| Error::io("write restore journal", &path, e))
}

/// The marker beside a database that names the journal of its restore in progress:
/// `.<file>.ducksafe-restore`.
pub fn marker_path(db: &Path) -> PathBuf {
    files::parent_of(db).join(format!(".{}.ducksafe-restore", files::file_name(db)))
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    journal: PathBuf,
}

fn read_marker(db: &Path) -> Option<std::result::Result<Marker, serde_json::Error>> {
    let bytes = fs::read(marker_path(db)).ok()?;
    Some(serde_json::from_slice(&bytes))
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

fn read_intent(journal: &Path) -> Option<Intent> {
    serde_json::from_slice(&fs::read(journal).ok()?).ok()
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
        shell::quote(marker)
    )
}

/// The marker beside the database when no journal can be reported for it (gone, or not
/// readable): what `list` and `validate` say first, since every backup and restore refuses
/// meanwhile. Reads only.
pub fn marker_trouble(settings: &Settings) -> Option<String> {
    let path = marker_path(&settings.db_path);
    let marker = read_marker(&settings.db_path)?.ok()?;
    if undone_by_hand(&marker) || read_intent(&marker.journal).is_some() {
        return None;
    }
    Some(format!(
        "UNFINISHED RESTORE recorded in `{}`: {}",
        path.display(),
        lost_journal(&path, &marker.journal)
    ))
}

/// A restore of this database still open in a journal the caller could not reach (another
/// quarantine folder, or a project moved since): refused, so that nothing backs up, sweeps or
/// restores a database whose WAL may sit in that journal's folder. A closed journal's marker is
/// removed.
pub fn check_marker(settings: &Settings) -> Result<()> {
    check_marker_after(settings, &[], false)
}

/// [`check_marker`] after a recovery that finished (or, in a dry run, would finish) the
/// journals `finishing`: their marker is no obstacle. A dry run removes no marker.
fn check_marker_after(settings: &Settings, finishing: &[PathBuf], dry_run: bool) -> Result<()> {
    let path = marker_path(&settings.db_path);
    let Some(marker) = read_marker(&settings.db_path) else {
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
    let closed = || {
        if !dry_run {
            remove_marker(&settings.db_path);
        }
        Ok(())
    };
    let Ok(marker) = marker else {
        return Err(refuse("the marker does not parse".into()));
    };
    if undone_by_hand(&marker) {
        return closed();
    }
    if finishing.contains(&marker.journal) {
        return Ok(());
    }
    let Ok(journal) = fs::read(&marker.journal) else {
        return Err(refuse(lost_journal(&path, &marker.journal)));
    };
    match serde_json::from_slice::<Intent>(&journal) {
        Ok(i) if i.state != PREPARED => closed(),
        Ok(i) if !database::same(&i.database, &settings.db_path) => Err(refuse(format!(
            "its journal `{}` was written for `{}`",
            marker.journal.display(),
            i.database.display()
        ))),
        Ok(_) => Err(refuse(format!(
            "its journal `{}` lies outside this configuration's quarantine folder `{}`",
            marker.journal.display(),
            quarantine::root(settings).display()
        ))),
        Err(_) => Err(refuse(format!(
            "its journal `{}` does not parse",
            marker.journal.display()
        ))),
    }
}

/// One interrupted restore of this database found by [`scan`].
struct Found {
    /// Its quarantine folder.
    dir: PathBuf,
    journal: PathBuf,
    intent: Intent,
    /// Found through the marker in another quarantine folder than this configuration's.
    elsewhere: bool,
}

/// The one scan for interrupted restores of this database (journals `prepared` for it): every
/// journal in the quarantine root, when the root is a private, real directory, then the journal
/// the marker beside the database names, wherever it is. Reads only.
fn scan(settings: &Settings) -> Vec<Found> {
    let root = quarantine::root(settings);
    let trusted = quarantine::check(settings).is_ok();
    let mut dirs: Vec<PathBuf> = if trusted {
        fs::read_dir(&root)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    dirs.sort();
    let elsewhere = read_marker(&settings.db_path)
        .and_then(std::result::Result::ok)
        .and_then(|m| m.journal.parent().map(Path::to_path_buf))
        .filter(|d| !dirs.contains(d));
    dirs.extend(elsewhere.clone());
    dirs.into_iter()
        .filter_map(|dir| {
            let journal = dir.join(INTENT);
            let intent = read_intent(&journal)?;
            (intent.state == PREPARED && database::same(&intent.database, &settings.db_path)).then(
                || Found {
                    elsewhere: elsewhere.as_ref() == Some(&dir),
                    dir,
                    journal,
                    intent,
                },
            )
        })
        .collect()
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

/// Interrupted restores of this database, without touching anything: what `list`, `validate`,
/// dry runs and failed commands report first.
pub fn pending(settings: &Settings) -> Vec<Pending> {
    scan(settings)
        .into_iter()
        .map(|f| {
            // The one command that finishes it: the rollback's own restore command (see
            // `shell::restore_line`). A journal in another quarantine folder than this
            // configuration's gets that folder pinned, so that the command works as printed.
            let mut finish =
                shell::restore_line(settings, &f.intent.backup_id, &f.intent.backup_sha256);
            if f.elsewhere {
                finish = format!(
                    "{finish} --set {}",
                    shell::quote(Path::new(&format!(
                        "QUARANTINE_DIR={}",
                        files::parent_of(&f.dir).display()
                    )))
                );
            }
            Pending {
                backup_id: f.intent.backup_id.clone(),
                quarantine: f.dir.clone(),
                started_at: f.intent.started_at,
                state: f.intent.describe(),
                finish,
                undo: f.intent.undo(&f.journal),
                journal: f.journal,
            }
        })
        .collect()
}

/// An interrupted restore that [`recover`] finished (or, in a dry run, would finish).
#[derive(Debug, Clone)]
pub struct Finished {
    pub intent: Intent,
    pub journal: PathBuf,
    /// The files it quarantined (in a dry run: those it has quarantined so far).
    pub quarantined: Vec<PathBuf>,
    /// What was done, in a line (`completed an interrupted restore …`): said by the caller,
    /// unless finishing it was the caller's own restore, which says so in its own words.
    pub note: String,
}

/// What [`recover`] did (or would do).
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    pub finished: Vec<Finished>,
    /// One line per other action taken (a rollback, a staged copy swept); the restores
    /// completed say theirs in [`Finished::note`].
    pub notes: Vec<String>,
}

impl Recovery {
    /// Every line of what was done: the restores completed, then the other actions.
    pub fn all_notes(self) -> Vec<String> {
        self.finished
            .into_iter()
            .map(|f| f.note)
            .chain(self.notes)
            .collect()
    }
}

/// Finishes the restores of this database that a crash interrupted: completes them, or rolls
/// back one whose staged copy was lost; then removes this database's staged copies that no
/// process works on any more. Refuses an unsafe quarantine root, a database in use, a rollback
/// that would not give back the previous state, and a journal it cannot reach. A dry run makes
/// the same checks under the same locks and writes nothing.
pub fn recover(settings: &Settings, dry_run: bool) -> Result<Recovery> {
    // Journals are only trusted from a private, real directory (see `scan`): refused here
    // rather than silently skipped.
    quarantine::check(settings)?;
    let mut recovery = Recovery::default();
    let mut handled = Vec::new();
    for Found {
        dir,
        journal,
        mut intent,
        elsewhere,
    } in scan(settings)
    {
        if elsewhere {
            // Not this configuration's to finish: `check_marker_after` refuses below.
            continue;
        }
        // Nobody may have the database open while the interrupted restore is finished.
        let _db_lock = DatabaseLock::acquire_if_present(&intent.database)?;
        handled.push(journal.clone());
        if intent.lost_staged_copy() {
            let returned = intent.roll_back(dry_run).map_err(|e| match e {
                Error::RestoreFailed { database, why } => Error::RestoreFailed {
                    database,
                    why: format!(
                        "{why}. Journal `{}`; to put back by hand what was moved and close it (with nothing using the database, after checking the files): `{}`",
                        journal.display(),
                        intent.undo(&journal).join(" && ")
                    ),
                },
                e => e,
            })?;
            if dry_run {
                recovery.notes.push(format!(
                    "would roll back an interrupted restore of backup `{}` that lost its staged copy ({} file(s) put back from `{}`; journal `{}`)",
                    intent.backup_id,
                    returned.len(),
                    dir.display(),
                    journal.display()
                ));
                continue;
            }
            intent.close(&dir, "rolled_back")?;
            recovery.notes.push(format!(
                "an interrupted restore of backup `{}` had lost its staged copy: it was rolled back, the database is as it was before it ({} file(s) put back from `{}`; journal `{}`)",
                intent.backup_id,
                returned.len(),
                dir.display(),
                journal.display()
            ));
            continue;
        }
        let quarantined = if dry_run {
            intent.quarantined()
        } else {
            let quarantined = intent.complete(&journal)?;
            intent.close(&dir, "done")?;
            quarantined
        };
        let undo = shell::put_back(&intent.database, &intent.moves, &quarantined);
        let note = format!(
            "{} an interrupted restore of backup `{}` (journal `{}`); the database it replaced is in `{}`{}",
            if dry_run { "would complete" } else { "completed" },
            intent.backup_id,
            journal.display(),
            dir.display(),
            if undo.is_empty() || dry_run {
                String::new()
            } else {
                format!(" (undo: {})", undo.join(" && "))
            }
        );
        recovery.finished.push(Finished {
            intent,
            journal,
            quarantined,
            note,
        });
    }
    // A journal of this database that the scan above could not reach: stop here, before the
    // staged copy it still needs is taken for a leftover.
    check_marker_after(settings, &handled, dry_run)?;
    // Staged copies of this database's restores that crashed before their intent was written
    // (with an intent, the restore was finished above).
    recovery
        .notes
        .extend(staging::sweep(&settings.db_path, dry_run));
    Ok(recovery)
}
