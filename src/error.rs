//! Every failure ducksafe can report, and the one place that maps each to its protocol code, exit
//! code and operator hint.
//!
//! Domain code returns [`Error`]; the CLI and the hook turn it into text or into
//! [`ErrorEntry`] values with [`Error::entries`]. Messages are lowercase, carry the path or value
//! in backticks, and end without a period; a `hint` says what to do next.
//!
//! One command exits by another table: `ducksafe status` is a monitoring check, and exits with
//! [`CheckState::exit_code`] (0 ok, 1 warning, 2 critical, 3 unknown, the Nagios/Icinga/Sensu
//! plugin convention), even when it cannot read its configuration (unknown, not 78).

use std::io;
use std::path::{Path, PathBuf};

use crate::protocol::{ErrorCode, ErrorEntry};

/// One configuration problem, with a JSON Pointer to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON Pointer into the configuration (`/BACKUP_KEEP_LAST`), `""` for the whole document.
    pub pointer: String,
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),

    /// `delete` of a backup that is kept on purpose (pinned, named by `latest`, a running
    /// run's): a refusal of what was asked, with what to do first. Exit 64, as a command line
    /// that cannot be done as given.
    #[error("cannot delete backup `{id}`: {why}")]
    DeleteRefused {
        id: String,
        why: String,
        /// What to do first.
        first: String,
    },

    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// A request that breaks its schema: one entry per violation.
    #[error("invalid request")]
    RequestViolations(Vec<String>),

    #[error("unsupported event `{0}`: expected `pre_run`, `post_run` or `validate`")]
    UnsupportedEvent(String),

    #[error("unsupported protocol_version `{0}`: this ducksafe speaks version 1")]
    UnsupportedProtocol(String),

    #[error("configuration file `{}` not found", path.display())]
    ConfigNotFound { path: PathBuf },

    #[error("configuration `{}` is invalid: {} problem{}", source_name, violations.len(), if violations.len() == 1 { "" } else { "s" })]
    ConfigInvalid {
        source_name: String,
        violations: Vec<Violation>,
    },

    #[error("database `{}` not found", path.display())]
    DatabaseNotFound { path: PathBuf },

    #[error("`{}` is not a usable DuckDB database: {why}", path.display())]
    DatabaseInvalid { path: PathBuf, why: String },

    /// DuckDB's own checksums say the database's bytes are damaged (bit rot, a bad disk, a
    /// crashed writer): the database itself, not a backup.
    #[error("the database `{}` itself is damaged (not a backup): {why}", path.display())]
    DatabaseDamaged {
        path: PathBuf,
        why: String,
        /// The way out: the newest good backup and the command that restores it.
        restore: Option<String>,
    },

    #[error("database `{}` is in use{}", path.display(), holder_text(*pid, holder.as_deref()))]
    DatabaseLocked {
        path: PathBuf,
        pid: Option<i32>,
        holder: Option<String>,
    },

    /// `dir`: the backup directory the run's backup is in (through whichever configuration
    /// it was started).
    #[error(
        "another guarded run of this database is in progress: PID {pid}, since {}, after backup `{backup_id}` in `{}`",
        since.format("%Y-%m-%d %H:%M:%S UTC"),
        dir.display()
    )]
    RunInProgress {
        dir: PathBuf,
        pid: i32,
        backup_id: String,
        since: chrono::DateTime<chrono::Utc>,
    },

    /// Another ducksafe holds the database's lease file for a moment: a pre_run between its
    /// check and its record, a restore, a post_run ending its run.
    #[error("another ducksafe is starting, restoring or ending a guarded run of database `{}`", database.display())]
    RunTurnBusy { database: PathBuf, lease: PathBuf },

    #[error("another ducksafe is working in `{}`{}", dir.display(), holder_text(*pid, None))]
    LockBusy { dir: PathBuf, pid: Option<i32> },

    #[error("backup directory `{}` is unsafe: {why}", dir.display())]
    BackupDirUnsafe { dir: PathBuf, why: String },

    #[error("backup directory `{}` is on a read-only filesystem: no backup can be written there", dir.display())]
    BackupDirReadOnly { dir: PathBuf },

    /// A folder ducksafe keeps private data in, other than the backup directory, named by its
    /// configuration key (`QUARANTINE_DIR`).
    #[error("{what} `{}` (`{key}`) is unsafe: {why}", dir.display())]
    UnsafeFolder {
        key: &'static str,
        what: &'static str,
        dir: PathBuf,
        why: String,
    },

    #[error("backup directory `{}` belongs to the database `{other}`, not to `{}`", dir.display(), ours.display())]
    SharedBackupDir {
        dir: PathBuf,
        other: String,
        ours: PathBuf,
    },

    #[error("the database owner file `{}` is damaged: {why}", path.display())]
    OwnerFileDamaged { path: PathBuf, why: String },

    #[error(
        "not enough free space in `{}`: {} available, {} required",
        dir.display(),
        human_bytes(*available),
        human_bytes(*required)
    )]
    InsufficientSpace {
        dir: PathBuf,
        available: u64,
        required: u64,
    },

    /// A restore refused before it copies a byte: its staged copy of the backup would not fit
    /// beside the database.
    #[error(
        "cannot stage the restore at `{}`: not enough free space in `{}`: {} available, {} required (the backup's size, plus 1 MiB)",
        staged.display(),
        dir.display(),
        human_bytes(*available),
        human_bytes(*required)
    )]
    NoRoomToStage {
        staged: PathBuf,
        dir: PathBuf,
        available: u64,
        required: u64,
    },

    #[error("cannot back up `{}`: {why}", path.display())]
    BackupFailed { path: PathBuf, why: String },

    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("backup `{}` failed verification: {why}", path.display())]
    VerificationFailed { path: PathBuf, why: String },

    /// `ducksafe verify` found a backup that fails its checks, or files that do not belong:
    /// its report lists each.
    #[error("verification failed")]
    StoredBackupsFailed,

    #[error("backup `{id}` not found in `{}`", dir.display())]
    BackupNotFound { id: String, dir: PathBuf },

    /// `latest.duckdb` names no backup of this database: never replaced by another one.
    #[error("`{}` points to `{target}`, which is not a backup of this database", link.display())]
    DanglingLatest { link: PathBuf, target: String },

    #[error("no backups yet: the backup directory `{}` does not exist", dir.display())]
    NoBackupDir { dir: PathBuf },

    #[error("restore of `{}` failed: {why}", database.display())]
    RestoreFailed { database: PathBuf, why: String },

    /// `restore --table` refused before it wrote anything (a table missing, a definition that
    /// differs, a foreign key or a view that would break): a refusal of what was asked, with
    /// what to do instead. Exit 64, as `DeleteRefused`.
    #[error("cannot restore tables of `{}`: {why}", database.display())]
    TableRestoreRefused {
        database: PathBuf,
        why: String,
        /// What to do instead (`--replace-schema`, "also restore table X").
        hint: String,
    },

    /// The object store (`REMOTE_URL`) refused or failed: what it means is `failure`.
    #[error("remote `{url}`: {why}")]
    Remote {
        failure: RemoteFailure,
        url: String,
        why: String,
    },

    /// A file `diff` was asked to compare that does not exist.
    #[error("no file `{}` to compare", path.display())]
    CompareFileNotFound { path: PathBuf },

    /// A file `diff` was asked to compare that is no DuckDB database this DuckDB can read.
    #[error("`{}` cannot be compared: {why}", path.display())]
    CompareFileInvalid { path: PathBuf, why: String },

    /// `diff` of a packed backup whose rebuild would not fit beside the database.
    #[error(
        "cannot rebuild backup `{id}` to compare it: not enough free space in `{}`: {} available, {} required (the backup's size, plus 1 MiB)",
        dir.display(),
        human_bytes(*available),
        human_bytes(*required)
    )]
    NoRoomToCompare {
        id: String,
        dir: PathBuf,
        available: u64,
        required: u64,
    },

    /// `diff --rows TABLE` of a table that neither state (or only one) has.
    #[error("no table `{table}` in {missing_in}")]
    TableNotFound { table: String, missing_in: String },

    #[error("internal error: {0}")]
    Internal(String),
}

/// What an object store's failure means for the operator (see [`crate::remote`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteFailure {
    /// No credentials, or the store refused them (wrong secret, expired token).
    Auth,
    /// The credentials are good but may not do this (a bucket policy).
    Denied,
    /// The bucket of `REMOTE_URL` does not exist.
    NoBucket,
    /// The object (a remote backup) is not there.
    NotFound,
    /// The key already holds something else (another database's backup under the prefix).
    Conflict,
    /// A remote copy whose size or checksum is not its manifest's.
    Corrupt,
    /// The store could not be reached, or kept failing, after bounded retries.
    Unavailable,
    /// Any other unexpected answer.
    Io,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `diff`'s exit code when the two states differ (as `diff` and `git diff --exit-code`): not
/// an error, so no protocol code.
pub const EXIT_DIFFERENCES: i32 = 1;

fn holder_text(pid: Option<i32>, holder: Option<&str>) -> String {
    match (pid, holder) {
        (Some(pid), Some(exe)) => format!(": held by `{exe}` (PID {pid})"),
        (Some(pid), None) => format!(": held by PID {pid}"),
        (None, Some(exe)) => format!(": held by `{exe}`"),
        (None, None) => String::new(),
    }
}

/// The verdict of `ducksafe status`, worst last, and its exit code in the convention monitoring
/// agents use for plugins (Nagios, Icinga, Sensu): deliberately not the sysexits codes of the
/// other commands, which a monitoring agent would read as "unknown" or worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckState {
    Ok,
    Warning,
    Critical,
    /// The check could not be made (an unreadable configuration or backup directory).
    Unknown,
}

impl CheckState {
    pub fn exit_code(self) -> i32 {
        match self {
            CheckState::Ok => 0,
            CheckState::Warning => 1,
            CheckState::Critical => 2,
            CheckState::Unknown => 3,
        }
    }

    /// `OK`, `WARNING`, `CRITICAL`, `UNKNOWN`: the word a plugin's first line starts with.
    pub fn label(self) -> &'static str {
        match self {
            CheckState::Ok => "OK",
            CheckState::Warning => "WARNING",
            CheckState::Critical => "CRITICAL",
            CheckState::Unknown => "UNKNOWN",
        }
    }
}

/// `1.5 GiB`-style sizes for messages.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss)]
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

impl Error {
    /// Shorthand for an I/O failure on a path.
    pub fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The protocol code: the one mapping from failure to code (and so to exit code).
    pub fn code(&self) -> ErrorCode {
        use ErrorCode as C;
        match self {
            Error::Usage(_)
            | Error::DeleteRefused { .. }
            | Error::TableRestoreRefused { .. }
            | Error::TableNotFound { .. } => C::Usage,
            Error::InvalidRequest(_) | Error::RequestViolations(_) => C::InvalidRequest,
            Error::UnsupportedEvent(_) => C::UnsupportedEvent,
            Error::UnsupportedProtocol(_) => C::UnsupportedProtocolVersion,
            Error::ConfigNotFound { .. } => C::ConfigNotFound,
            Error::ConfigInvalid { .. } => C::ConfigInvalid,
            Error::DatabaseNotFound { .. } | Error::CompareFileNotFound { .. } => {
                C::DatabaseNotFound
            }
            Error::DatabaseInvalid { .. } | Error::CompareFileInvalid { .. } => C::DatabaseInvalid,
            Error::DatabaseDamaged { .. } => C::DatabaseDamaged,
            Error::DatabaseLocked { .. } => C::DatabaseLocked,
            Error::LockBusy { .. } | Error::RunInProgress { .. } | Error::RunTurnBusy { .. } => {
                C::LockBusy
            }
            Error::BackupDirUnsafe { .. }
            | Error::UnsafeFolder { .. }
            | Error::SharedBackupDir { .. }
            | Error::OwnerFileDamaged { .. } => C::BackupDirUnsafe,
            Error::InsufficientSpace { .. }
            | Error::NoRoomToStage { .. }
            | Error::NoRoomToCompare { .. } => C::InsufficientSpace,
            Error::BackupFailed { .. } | Error::BackupDirReadOnly { .. } => C::BackupFailed,
            Error::Io { source, .. } if is_no_space(source) => C::InsufficientSpace,
            Error::Io { .. } => C::IoError,
            Error::VerificationFailed { .. } | Error::StoredBackupsFailed => C::VerificationFailed,
            Error::BackupNotFound { .. }
            | Error::NoBackupDir { .. }
            | Error::DanglingLatest { .. } => C::BackupNotFound,
            Error::RestoreFailed { .. } => C::RestoreFailed,
            Error::Remote { failure, .. } => match failure {
                RemoteFailure::Auth | RemoteFailure::Denied => C::RemoteAuth,
                RemoteFailure::NoBucket => C::RemoteBucketMissing,
                RemoteFailure::NotFound => C::BackupNotFound,
                RemoteFailure::Conflict => C::RemoteConflict,
                RemoteFailure::Corrupt => C::VerificationFailed,
                RemoteFailure::Unavailable => C::RemoteUnavailable,
                RemoteFailure::Io => C::RemoteIo,
            },
            Error::Internal(_) => C::Internal,
        }
    }

    pub fn exit_code(&self) -> i32 {
        self.code().exit_code()
    }

    /// What the operator should do next.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Usage(_) => Some("run `ducksafe --help` for usage".into()),
            Error::DeleteRefused { first, .. } => Some(format!("{first}; nothing was deleted")),
            Error::TableRestoreRefused { hint, .. } => Some(hint.clone()),
            Error::InvalidRequest(_) | Error::RequestViolations(_) => Some(
                "send one JSON object, e.g. {\"protocol_version\": 1, \"event\": \"pre_run\"}; `ducksafe schema request` prints the schema".into(),
            ),
            Error::UnsupportedEvent(_) | Error::UnsupportedProtocol(_) => {
                Some("`ducksafe schema request` prints the request schema".into())
            }
            Error::ConfigNotFound { .. } => Some(
                "pass `--config PATH`, set `DUCKSAFE_CONFIG`, or run `ducksafe init` to write `config.yaml`".into(),
            ),
            Error::ConfigInvalid { .. } => {
                Some("`ducksafe schema config` prints every key with its type and default".into())
            }
            Error::DatabaseNotFound { .. } => Some(
                "check `DB_PATH` in the configuration (and `DUCKSAFE_DB_PATH`); if the database was deleted or lost, `ducksafe restore` puts the latest backup back (`ducksafe list` shows them); a backup never creates a database".into(),
            ),
            Error::DatabaseInvalid { .. } => Some(
                "check that `DB_PATH` names the simulation's DuckDB file and that this DuckDB can read it"
                    .into(),
            ),
            Error::DatabaseDamaged { restore, .. } => Some(format!(
                "nothing was published or rotated and every backup is as it was; do not run the workload on this database. {} (docs/runbook.md, 'The database is damaged')",
                restore.as_deref().unwrap_or(
                    "There is no earlier backup of it to restore: copy the file aside and try DuckDB's EXPORT DATABASE for what can still be read"
                )
            )),
            Error::DatabaseLocked { path, .. } => Some(format!(
                "another process has the database open (named above: a run, a notebook, a DuckDB shell); wait for it to finish or stop it, then retry (`fuser -v {}` lists them)",
                crate::engine::shell::quote(path)
            )),
            Error::LockBusy { .. } => {
                Some("another backup or restore is running; retry when it has finished".into())
            }
            Error::RunInProgress { .. } => Some(
                "guarded runs of one database take turns, whatever configuration or backup directory they use: retry when that run's post_run has ended it (a run whose process is gone no longer counts)".into(),
            ),
            Error::RunTurnBusy { lease, .. } => Some(format!(
                "it holds `{}` while it checks and records a guarded run, or restores: retry in a moment",
                lease.display()
            )),
            Error::BackupDirUnsafe { dir, .. } => Some(unsafe_folder_hint("BACKUP_DIR", dir)),
            Error::BackupDirReadOnly { .. } => Some(
                "no chmod fixes this: remount that filesystem read-write (`mount -o remount,rw MOUNTPOINT`), or set `BACKUP_DIR` to a writable disk; nothing was written, and `list` and `verify` still read the backups there".into(),
            ),
            Error::UnsafeFolder { key, dir, .. } => Some(unsafe_folder_hint(key, dir)),
            // `adopt` is offered only when the other database is gone from its path: it is for a
            // project moved on purpose, never a way to take a live database's backups.
            Error::SharedBackupDir { other, .. } if Path::new(other).exists() => Some(format!(
                "give each database its own `BACKUP_DIR`: `{other}` still exists and these are its backups (see docs/runbook.md, 'Several databases on one machine')"
            )),
            Error::SharedBackupDir { other, .. } => Some(format!(
                "give each database its own `BACKUP_DIR`; if this database was moved here on purpose from `{other}`, run `ducksafe adopt` once (see docs/runbook.md, 'Several databases on one machine')"
            )),
            Error::OwnerFileDamaged { .. } => Some(
                "it records which database this directory's backups belong to; check the directory, then run `ducksafe adopt` to write it again".into(),
            ),
            Error::InsufficientSpace { .. } => Some(
                "free space on that filesystem (`ducksafe prune` applies a lowered `BACKUP_KEEP_LAST` now), or set `BACKUP_DIR` to a larger disk; no backup was written".into(),
            ),
            Error::NoRoomToStage { .. } => Some(
                "a restore first copies the backup beside the database, which then stays in quarantine on that filesystem: free space there (quarantine folders of earlier restores each hold a full copy; delete those you no longer need), then retry; nothing was changed".into(),
            ),
            Error::Io { source, .. } if is_no_space(source) => Some(
                "the filesystem filled up; nothing half-written was kept, and earlier backups and the database are as they were".into(),
            ),
            Error::BackupFailed { .. } | Error::Io { .. } => None,
            Error::VerificationFailed { .. } => Some(
                "the backup was not published (or must not be trusted); run `ducksafe verify --all` and see docs/runbook.md".into(),
            ),
            Error::StoredBackupsFailed => Some(
                "do not restore a FAILED backup; see docs/runbook.md, section 'Verification failed'".into(),
            ),
            Error::BackupNotFound { .. } => Some("`ducksafe list` shows the stored backups".into()),
            Error::DanglingLatest { .. } => Some(
                "name the backup to use by its id (`ducksafe list` shows them); the next backup points `latest` at itself again".into(),
            ),
            Error::NoBackupDir { .. } => Some(
                "run `ducksafe backup` (or the pre-run hook) first, or check `BACKUP_DIR`".into(),
            ),
            Error::RestoreFailed { .. } => Some(
                "the message says whether the database was replaced; see docs/runbook.md, section 'Restore failed'".into(),
            ),
            Error::Remote { failure, .. } => Some(remote_hint(*failure).into()),
            Error::CompareFileNotFound { .. } => Some(
                "name a DuckDB file that exists, `current` for the live database, or a backup (`latest`, or an id `ducksafe list` shows)".into(),
            ),
            Error::CompareFileInvalid { .. } => Some(
                "name a DuckDB database file (one this DuckDB can read), `current` for the live database, or a backup (`latest`, or an id `ducksafe list` shows)".into(),
            ),
            Error::NoRoomToCompare { .. } => Some(
                "an older backup kept as packs (`BACKUP_STORAGE: incremental`) is rebuilt beside the database before it is compared, and removed after: free that much space there, or compare newer backups (plain files, read in place); nothing was written".into(),
            ),
            Error::TableNotFound { .. } => Some(
                "`ducksafe diff` without `--rows` lists the tables of both states; name one as `schema.table` (default schema `main`)".into(),
            ),
            Error::Internal(_) => Some(
                "this is a bug in ducksafe; nothing unverified was published. Please report it with the output above".into(),
            ),
        }
    }

    /// The protocol error entries: one per problem (an invalid configuration gives one per
    /// violation).
    pub fn entries(&self) -> Vec<ErrorEntry> {
        let code = self.code();
        if let Error::RequestViolations(violations) = self {
            return violations
                .iter()
                .map(|m| ErrorEntry {
                    code,
                    message: m.clone(),
                    retryable: code.retryable(),
                    path: None,
                    hint: self.hint(),
                })
                .collect();
        }
        if let Error::ConfigInvalid { violations, .. } = self {
            return violations
                .iter()
                .map(|v| ErrorEntry {
                    code,
                    message: v.message.clone(),
                    retryable: code.retryable(),
                    path: Some(v.pointer.clone()),
                    hint: v.hint.clone(),
                })
                .collect();
        }
        vec![ErrorEntry {
            code,
            message: self.to_string(),
            retryable: code.retryable(),
            path: self.config_key().map(|k| format!("/{k}")),
            hint: self.hint(),
        }]
    }

    /// The configuration key at fault, when one is (reported as the entry's JSON Pointer).
    fn config_key(&self) -> Option<&'static str> {
        match self {
            Error::BackupDirUnsafe { .. }
            | Error::SharedBackupDir { .. }
            | Error::OwnerFileDamaged { .. } => Some("BACKUP_DIR"),
            Error::UnsafeFolder { key, .. } => Some(*key),
            Error::Remote {
                failure: RemoteFailure::NoBucket | RemoteFailure::Conflict,
                ..
            } => Some("REMOTE_URL"),
            _ => None,
        }
    }
}

/// What to do about a failure of the object store. The local backups are never touched by one.
fn remote_hint(failure: RemoteFailure) -> &'static str {
    match failure {
        RemoteFailure::Auth => "credentials come only from the environment: check `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN` for temporary ones); the local backups are as they were",
        RemoteFailure::Denied => "the credentials may not do this: grant the actions docs/remote.md lists on the bucket and prefix; the local backups are as they were",
        RemoteFailure::NoBucket => "create the bucket, or correct the bucket in `REMOTE_URL` (and `REMOTE_ENDPOINT`, `REMOTE_REGION`); the local backups are as they were",
        RemoteFailure::NotFound => "`ducksafe list --remote` shows the remote backups",
        RemoteFailure::Conflict => "give each database its own `REMOTE_URL` prefix; nothing under that key was replaced",
        RemoteFailure::Corrupt => "do not restore this remote copy; a manifest is never replaced: delete that id's objects (`<id>.duckdb` and its `<id>…manifest.json` records) and run `ducksafe push`, which uploads the local backup again if it still exists; a pack missing on the server is uploaded again by `ducksafe push` alone (docs/remote.md)",
        RemoteFailure::Unavailable => "the store could not be reached after retries: check the network and `REMOTE_ENDPOINT`, then run `ducksafe push` (the next pre_run catches up too); the local backups are as they were",
        RemoteFailure::Io => "see docs/remote.md; the local backups are as they were",
    }
}

/// What to do about an unsafe folder. A shared system folder (`/tmp`, `/`, `/home`…) is never
/// to be chmod-ed: the key must point elsewhere instead.
fn unsafe_folder_hint(key: &str, dir: &Path) -> String {
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        let target = std::fs::canonicalize(dir)
            .or_else(|_| std::fs::read_link(dir))
            .unwrap_or_default();
        format!(
            "set `{key}` to the folder itself (the link points to `{}`), or replace the link by a real directory: ducksafe checks and keeps its own folders private as what they are",
            target.display()
        )
    } else if crate::files::is_read_only_fs(dir) {
        format!(
            "`{}` is on a read-only filesystem, where no chmod works: remount it read-write (`mount -o remount,rw MOUNTPOINT`) and make it private to this user (`chmod 700 {}`), or set `{key}` to a folder of its own",
            dir.display(),
            crate::engine::shell::quote(dir)
        )
    } else if crate::files::is_shared_system_folder(dir) {
        format!(
            "`{}` is a shared system folder: leave its permissions alone and set `{key}` to a folder of its own (ducksafe creates it `0700`), or remove `{key}` to use the default",
            dir.display()
        )
    } else {
        format!(
            "make `{key}` private to this user: `chmod 700 {}` (and `chown` it to this user), or set `{key}` to a folder of its own",
            crate::engine::shell::quote(dir)
        )
    }
}

fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_exits_by_the_monitoring_plugin_convention() {
        let codes: Vec<i32> = [
            CheckState::Ok,
            CheckState::Warning,
            CheckState::Critical,
            CheckState::Unknown,
        ]
        .map(CheckState::exit_code)
        .into();
        assert_eq!(codes, [0, 1, 2, 3]);
        assert!(CheckState::Warning < CheckState::Critical);
    }

    #[test]
    fn disk_full_during_io_is_insufficient_space() {
        let e = Error::io(
            "write",
            Path::new("b"),
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!(e.code(), ErrorCode::InsufficientSpace);
        let e = Error::io(
            "write",
            Path::new("b"),
            io::Error::from_raw_os_error(libc::EIO),
        );
        assert_eq!(e.code(), ErrorCode::IoError);
    }

    #[test]
    fn locked_message_names_the_pid() {
        let e = Error::DatabaseLocked {
            path: "sim.duckdb".into(),
            pid: Some(42),
            holder: Some("python3".into()),
        };
        assert_eq!(
            e.to_string(),
            "database `sim.duckdb` is in use: held by `python3` (PID 42)"
        );
        assert!(e.entries()[0].retryable);
    }

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
