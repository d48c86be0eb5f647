//! `ducksafe delete ID`: deletes one backup now, with its manifest and sidecar. For the backup
//! rotation cannot order (dated in the future by a wrong clock) or one an operator knows is
//! unwanted. Refuses a pinned backup, the one `latest.duckdb` names and the one a guarded run in
//! progress may restore: those are decisions to undo first (`unpin`, a new backup that `latest`
//! then names, the run's post_run).

use std::io::{self, Write};

use serde::Serialize;

use super::{Access, Global};
use crate::cli::DeleteArgs;
use crate::error::Error;
use crate::output::{self, Report};

/// Fields in alphabetical order, as the JSON has always listed them.
#[derive(Serialize)]
struct DeleteReport {
    bytes: Option<u64>,
    deleted: bool,
    dry_run: bool,
    id: String,
    /// Other backups found damaged on the way (a packed backup whose pack went missing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

impl Report for DeleteReport {
    fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        if self.dry_run {
            writeln!(out, "dry run: would delete `{}`", self.id)
        } else {
            writeln!(
                out,
                "deleted `{}` (its manifest and checksum file too)",
                self.id
            )
        }
    }

    fn audit(&self) -> crate::audit::Facts {
        crate::audit::Facts::done(
            if self.deleted { "deleted" } else { "planned" },
            Some(&self.id),
            self.bytes,
        )
    }
}

pub fn run(g: &Global, a: &DeleteArgs) -> i32 {
    let deleted = (|| {
        if a.id == "latest" || a.id == crate::engine::store::LATEST {
            return Err(Error::Usage(
                "`delete` takes a backup id, never `latest`: `ducksafe list` shows the ids".into(),
            ));
        }
        let settings = g.settings()?;
        super::warn_pending(&settings);
        let opened = super::open_store(&settings, Access::Change { dry_run: a.dry_run })?;
        let store = &opened.store;
        let entry = store.resolve(&a.id)?;
        let refuse = |why: String, first: String| Error::DeleteRefused {
            id: entry.id.clone(),
            why,
            first,
        };
        if entry.manifest.pinned {
            return Err(refuse(
                "it is pinned".into(),
                format!(
                    "unpin it first (`ducksafe unpin {}`) if it really should go",
                    entry.id
                ),
            ));
        }
        if store.latest_id().as_deref() == Some(entry.id.as_str()) {
            return Err(refuse(
                "it is the one `latest.duckdb` names, kept for as long as it does".into(),
                format!(
                    "take a new backup first (`ducksafe backup`): `latest` then names that one, and `ducksafe delete {}` deletes this one",
                    entry.id
                ),
            ));
        }
        let db = crate::engine::database::path(&settings)?;
        if let Some(run) = crate::engine::lease::in_use(Some(&db), store.dir())
            .into_iter()
            .find(|l| l.backup_id == entry.id)
        {
            return Err(refuse(
                format!(
                    "it is the one a guarded run in progress (PID {}) may restore",
                    run.pid
                ),
                "delete it once that run's post_run has ended it".into(),
            ));
        }
        let warnings = if a.dry_run {
            Vec::new()
        } else {
            store.delete(&entry.id)?.into_iter().collect()
        };
        Ok(DeleteReport {
            id: entry.id,
            deleted: !a.dry_run,
            dry_run: a.dry_run,
            bytes: entry.file_bytes,
            warnings,
        })
    })();
    output::finish(g.json, deleted.map_err(Into::into))
}
