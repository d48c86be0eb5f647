//! One file per subcommand. Each turns its flags and the configuration into calls into the
//! engine and builds one serialisable report, which [`crate::output::finish`] writes as text or
//! as `--json`; errors go the same way, with the exit code from the one error table. The hook's
//! flag forms (`pre-run`, `post-run`, `validate`) build a typed request ([`Global::request`])
//! and let [`crate::hook`] answer it.

pub mod adopt;
pub mod backup;
pub mod completions;
pub mod delete;
pub mod diff;
pub mod hook;
pub mod init;
pub mod list;
pub mod man;
pub mod pin;
pub mod post_run;
pub mod pre_run;
pub mod prune;
pub mod remote;
pub mod restore;
pub mod schema;
pub mod status;
pub mod validate;
pub mod verify;
pub mod version;

use std::path::PathBuf;

use crate::config::{self, Asked, Settings};
use crate::engine::lock::DirLock;
use crate::engine::store::Store;
use crate::error::Result;
use crate::output;
use crate::protocol::{ConfigSource, Event, Request};

/// Flags shared by every subcommand.
#[derive(Debug, Clone)]
pub struct Global {
    pub config: Option<PathBuf>,
    pub json: bool,
    /// `--set KEY=VALUE`, in order: over the configuration and the environment.
    pub set: Vec<(String, String)>,
    /// `--quiet`: no progress bar (its `LOG_LEVEL` is already among `set`).
    pub quiet: bool,
}

impl Global {
    /// Loads and validates the configuration (`--config`, else the default lookup; `--set`
    /// over the environment), then starts logging at its `LOG_LEVEL`.
    pub fn settings(&self) -> Result<Settings> {
        let asked = self.config.clone().map_or(Asked::Nothing, Asked::Path);
        let settings = config::load_asked(asked, &self.set)?;
        crate::audit::located(&settings);
        output::start_logging(settings.config.log_level.as_tracing());
        for n in &settings.notes {
            tracing::debug!("{n}");
        }
        Ok(settings)
    }

    /// Draws a progress bar on stderr for this command's long work, when stderr is a terminal
    /// and `--quiet` was not given (the commands that copy, hash or rebuild call it).
    pub fn show_progress(&self) {
        crate::progress::enable(self.quiet);
    }

    /// The request the flag forms (`pre-run`, `post-run`, `validate`) stand for: `event` with
    /// the configuration `--config` names and the `--set` pairs; the caller sets the event's
    /// own fields.
    pub fn request(&self, event: Event, request_id: Option<String>) -> Request {
        Request {
            protocol_version: 1,
            event,
            request_id,
            config: self.config.as_ref().map(|p| ConfigSource::Path {
                path: p.display().to_string(),
            }),
            set: (!self.set.is_empty()).then(|| self.set.iter().cloned().collect()),
            dry_run: false,
            backup_id: None,
            backup_sha256: None,
            run: None,
            on_failure: None,
        }
    }
}

/// Says on stderr, before anything else, that a restore of this database was interrupted and is
/// unfinished (for the commands that neither finish it nor report it themselves).
pub fn warn_pending(settings: &Settings) {
    output::print_warnings(&crate::engine::standing_warnings(settings));
}

/// How a command uses the backup directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// It only reads: no lock, nothing swept (`list`, `verify`).
    Read,
    /// It changes the directory: the directory lock (a dry run takes it without writing, not
    /// even the lock file). What an interrupted run left is for the next backup to remove and
    /// name (the runbook says so): an operator command, and one that then fails above all,
    /// removes nothing it was not asked to.
    Change { dry_run: bool },
}

/// This database's backup directory, opened for an operator command. While it lives, a
/// command that changes the directory holds its lock.
pub struct Opened {
    pub store: Store,
    _lock: Option<DirLock>,
}

/// Opens the backup directory the way every operator command does: it must exist and be
/// private; for a change, take its lock; check that its backups are this database's (another
/// database's leave the inventory).
pub fn open_store(settings: &Settings, access: Access) -> Result<Opened> {
    let store = Store::open(&settings.backup_dir, false)?;
    let lock = match access {
        Access::Read => None,
        Access::Change { dry_run: true } => DirLock::acquire_without_writing(store.dir())?,
        Access::Change { dry_run: false } => Some(store.lock_only()?),
    };
    let owner = crate::engine::identity::check(store.dir(), settings)?;
    Ok(Opened {
        store: store.owned_by(owner),
        _lock: lock,
    })
}
