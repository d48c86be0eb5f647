//! `ducksafe adopt [--dry-run]`: after moving the project folder on purpose, makes the backup
//! directory's backups those of the database `DB_PATH` names now. Without it, a directory whose
//! database moved is refused by every command (see [`crate::engine::identity`]).

use std::io::{self, Write};

use serde::Serialize;

use super::Global;
use crate::cli::AdoptArgs;
use crate::engine::identity::{self, Adoption};
use crate::engine::store::Store;
use crate::output::{self, Failure, Report};

#[derive(Serialize)]
struct Adopted {
    adoption: Adoption,
    dry_run: bool,
    warnings: Vec<String>,
}

impl Report for Adopted {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        let a = &self.adoption;
        let verb = if self.dry_run { "would make" } else { "made" };
        match (&a.previous, a.changed) {
            (_, false) => writeln!(
                out,
                "`{}` already belongs to `{}`; nothing to do",
                a.backup_dir.display(),
                a.database.display()
            ),
            (Some(previous), true) => writeln!(
                out,
                "{verb} the {} backup(s) of `{}` in `{}` those of `{}` (database id {})",
                a.backups.len(),
                previous.display(),
                a.backup_dir.display(),
                a.database.display(),
                a.database_id
            ),
            (None, true) => writeln!(
                out,
                "{verb} `{}` the backup directory of `{}` ({} backup(s), database id {})",
                a.backup_dir.display(),
                a.database.display(),
                a.backups.len(),
                a.database_id
            ),
        }
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn audit(&self) -> crate::audit::Facts {
        crate::audit::Facts::done(
            if self.adoption.changed {
                "adopted"
            } else {
                "unchanged"
            },
            None,
            None,
        )
    }
}

pub fn run(g: &Global, a: &AdoptArgs) -> i32 {
    let settings = match g.settings() {
        Ok(s) => s,
        Err(e) => return output::fail(g.json, e),
    };
    let adopted = (|| {
        // Not `super::open_store`: the directory is not this database's yet; adopting makes it.
        let store = Store::open(&settings.backup_dir, false)?;
        // A dry run writes nothing, not even the lock file.
        let _lock = if a.dry_run {
            crate::engine::lock::DirLock::acquire_without_writing(store.dir())?
        } else {
            Some(store.lock_only()?)
        };
        // A restore left open before the move must be finished where it started: its journal
        // names the old paths.
        crate::engine::journal::check_marker(&settings)?;
        identity::adopt(&store, &settings, a.dry_run)
    })();
    // What every response says: an interrupted restore, ducksafe's folders left open.
    let warnings = crate::engine::standing_warnings(&settings);
    let adopted = match adopted {
        Ok(adoption) => Ok(Adopted {
            dry_run: a.dry_run,
            adoption,
            warnings,
        }),
        Err(error) => Err(Failure {
            warnings: warnings.into(),
            ..error.into()
        }),
    };
    output::finish(g.json, adopted)
}
