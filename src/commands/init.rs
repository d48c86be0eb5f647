//! `ducksafe init [--demo]`: the seed's Quick Start steps 1–3. Writes a commented
//! `config.yaml` with secure defaults, creates `backups/` (0700) and `logs/`, and adds
//! `backups/` to `.gitignore` once. `--demo` also creates a demo `simulation.duckdb`.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::Serialize;

use super::Global;
use crate::cli::InitArgs;
use crate::engine::folders::{self, Kind};
use crate::error::{Error, Result};
use crate::files;
use crate::output::{self, Report};

/// The configuration `init` writes: the seed's Quick Start keys first, then ducksafe's, each
/// with its default spelled out.
pub const CONFIG_TEMPLATE: &str = "\
# ducksafe configuration. Every key: docs/configuration.md; schema: `ducksafe schema config`.
# Environment variables DUCKSAFE_<KEY> override these values.

# --- the seed's Quick Start keys ---
DB_PATH: simulation.duckdb        # the database to protect; relative to this file
LOG_LEVEL: INFO                   # TRACE, DEBUG, INFO, WARNING or ERROR (logs go to stderr)
BACKUP_RETENTION_DAYS: 7          # delete backups older than this (never the newest verified)

# --- backups ---
BACKUP_DIR: backups               # created 0700; keep it apart from the database
BACKUP_KEEP_LAST: 7               # newest backups kept (pinned ones do not count)
BACKUP_MAX_TOTAL_BYTES: 1073741824  # storage budget for all backups: 1 GiB
BACKUP_MIN_FREE_BYTES: 104857600  # refuse a backup that would leave less free: 100 MiB
VERIFY_LEVEL: full                # quick | standard | full (see docs/configuration.md)

# --- after a failed run (post_run) ---
RESTORE_ON_FAILURE: false         # true: put the pre-run backup back when the run fails
";

/// What `init` did, one line a step.
#[derive(Serialize)]
struct Done {
    done: Vec<String>,
}

impl Report for Done {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        for l in &self.done {
            writeln!(out, "{l}")?;
        }
        Ok(())
    }
}

pub fn run(g: &Global, a: &InitArgs) -> i32 {
    let done = init(&a.dir, a.force, a.demo).map(|done| Done { done });
    output::finish(g.json, done.map_err(Into::into))
}

fn init(dir: &Path, force: bool, demo: bool) -> Result<Vec<String>> {
    let mut done = Vec::new();
    fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;

    // ducksafe's own folder rules (engine::folders): a symlink or a folder of someone else is
    // refused, never followed; one open to group or others is tightened, with its note.
    let backups = dir.join("backups");
    let existed = fs::symlink_metadata(&backups).is_ok();
    let tightened = folders::ensure(&backups, Kind::BackupDir)?;
    done.push(match (existed, tightened) {
        (false, _) => format!("created `{}` (0700)", backups.display()),
        (true, None) => format!("`{}` exists; left as it is", backups.display()),
        (true, Some(note)) => note,
    });
    let logs = dir.join("logs");
    if fs::metadata(&logs).is_err() {
        // Private: the audit log in it names databases, backups and requests.
        crate::files::create_private_dir(&logs).map_err(|e| Error::io("create", &logs, e))?;
        done.push(format!("created `{}`", logs.display()));
    }

    let config = dir.join("config.yaml");
    if fs::symlink_metadata(&config).is_ok() && !force {
        done.push(format!(
            "`{}` exists; left as it is (--force rewrites it)",
            config.display()
        ));
    } else {
        files::write_atomic(&config, CONFIG_TEMPLATE.as_bytes())
            .map_err(|e| Error::io("write", &config, e))?;
        done.push(format!("wrote `{}`", config.display()));
    }

    let gitignore = dir.join(".gitignore");
    let existing = files::open_read_nofollow(&gitignore)
        .and_then(io::read_to_string)
        .unwrap_or_default();
    let has = existing
        .lines()
        .any(|l| matches!(l.trim(), "backups/" | "backups" | "/backups" | "/backups/"));
    if has {
        done.push("`.gitignore` already ignores `backups/`".into());
    } else {
        // Appended in place, never through a link (`O_NOFOLLOW`: a symlink is refused).
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&gitignore)
            .map_err(|e| Error::io("update", &gitignore, e))?;
        let sep = if existing.is_empty() || existing.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        writeln!(f, "{sep}backups/").map_err(|e| Error::io("update", &gitignore, e))?;
        done.push("added `backups/` to `.gitignore`".into());
    }

    if demo {
        let db = dir.join("simulation.duckdb");
        if fs::symlink_metadata(&db).is_ok() {
            done.push(format!("`{}` exists; left as it is", db.display()));
        } else {
            crate::demo::create(&db)?;
            fs::set_permissions(&db, fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io("chmod", &db, e))?;
            done.push(format!(
                "created demo `{}`: {} employees, {} events",
                db.display(),
                crate::demo::EMPLOYEES,
                crate::demo::EVENTS
            ));
        }
    }
    Ok(done)
}
