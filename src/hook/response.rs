//! Building protocol responses: what every response of one request shares ([`Ctx`]), and the
//! descriptions of a backup taken, a backup planned and a restore done, for the hook and for
//! the operator commands' `--json`. Nothing here decides anything; it only describes.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::config::Settings;
use crate::engine::backup;
use crate::engine::manifest::Manifest;
use crate::engine::restore;
use crate::engine::store;
use crate::error::Error;
use crate::protocol::{
    BackupRef, Decision, ErrorEntry, Response, RestoreRef, Status, PROTOCOL_VERSION,
};

/// What every response of one invocation shares.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub started: Instant,
    pub request_id: String,
    pub event: Option<String>,
    pub warnings: Vec<String>,
    pub paths: BTreeMap<String, String>,
}

impl Ctx {
    pub fn new(request_id: String, event: Option<&str>) -> Ctx {
        Ctx {
            started: Instant::now(),
            request_id,
            event: event.map(str::to_owned),
            warnings: Vec::new(),
            paths: BTreeMap::new(),
        }
    }

    /// Records the resolved paths of a configuration for the response.
    pub fn set_paths(&mut self, s: &Settings) {
        self.paths
            .insert("db_path".into(), s.db_path.display().to_string());
        self.paths
            .insert("backup_dir".into(), s.backup_dir.display().to_string());
        if let Some(c) = &s.config_path {
            self.paths.insert("config".into(), c.display().to_string());
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A response for a job done.
    pub fn ok(&self, decision: Decision, reason: String) -> Response {
        Response {
            protocol_version: PROTOCOL_VERSION,
            request_id: self.request_id.clone(),
            event: self.event.clone(),
            status: Status::Ok,
            decision,
            reason,
            backup: None,
            rollback: None,
            remote: None,
            rotation: None,
            space: None,
            restore: None,
            run: None,
            changes: None,
            paths: self.paths.clone(),
            supported_versions: None,
            warnings: self.warnings.clone(),
            errors: Vec::new(),
            exit_code: 0,
            duration_ms: self.elapsed_ms(),
        }
    }

    /// A response for a failure.
    pub fn fail(&self, decision: Decision, err: &Error) -> Response {
        self.fail_entries(decision, err.to_string(), err.entries(), err.exit_code())
    }

    fn fail_entries(
        &self,
        decision: Decision,
        reason: String,
        errors: Vec<ErrorEntry>,
        exit_code: i32,
    ) -> Response {
        let mut r = self.ok(decision, reason);
        r.status = Status::Error;
        r.errors = errors;
        r.exit_code = exit_code;
        r
    }
}

/// The response's description of a stored backup.
fn backup_ref(settings: &Settings, m: &Manifest) -> BackupRef {
    BackupRef {
        id: m.id.clone(),
        path: settings
            .backup_dir
            .join(store::backup_file_name(&m.id))
            .display()
            .to_string(),
        bytes: m.bytes,
        sha256: m.sha256.clone(),
        created_at: m
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        verified: !m.verification.checks.is_empty(),
        verification: m.verification.checks.clone(),
    }
}

/// A pre_run response for a backup taken.
pub fn backup_done(ctx: &Ctx, settings: &Settings, o: &backup::Outcome) -> Response {
    let mut r = ctx.ok(
        Decision::Proceed,
        format!("backup {} created and verified", o.manifest.id),
    );
    r.backup = Some(backup_ref(settings, &o.manifest));
    r.rollback = Some(crate::rollback::rollback(
        settings,
        &o.manifest,
        &ctx.request_id,
    ));
    r.rotation = Some(o.rotation.clone());
    r.space = Some(o.space.clone());
    say(&mut r, &o.notes);
    r
}

/// A pre_run response for a backup that failed: why, then what it had said and changed before
/// (a folder tightened, leftovers swept, an interrupted restore finished).
pub fn backup_refused(ctx: &Ctx, refused: &backup::Refused) -> Response {
    let mut r = ctx.fail(Decision::Abort, &refused.error);
    say(&mut r, &refused.notes);
    r
}

/// Adds a backup's remarks, the leftovers it swept and the restores it finished to `r`'s
/// warnings.
fn say(r: &mut Response, n: &backup::Notes) {
    r.warnings.extend(n.warnings.iter().cloned());
    r.warnings
        .extend(n.cleaned.iter().map(|name| cleaned_note(name, &n.cleaned)));
    r.warnings.extend(n.recovered.iter().cloned());
}

/// Why a file was removed from the backup directory: a temporary file is what an interrupted
/// run leaves; a manifest or checksum file whose backup is gone is that only when the run's
/// temporary backup was there too, else its backup file was deleted by hand.
fn cleaned_note(name: &str, all: &[String]) -> String {
    if name.starts_with(crate::files::TEMP_PREFIX) {
        return format!("removed `{name}`, left by an interrupted run");
    }
    let id = store::companion_of(name).unwrap_or(name);
    let interrupted = all.iter().any(|n| store::is_temp_backup_of(n, id));
    if interrupted {
        format!("removed `{name}`, left by an interrupted run")
    } else {
        format!("removed `{name}`: its backup `{id}.duckdb` is gone (deleted by hand, or lost)")
    }
}

/// A pre_run dry-run response: what would happen.
pub fn backup_planned(ctx: &Ctx, d: &backup::DryRun) -> Response {
    let mut r = ctx.ok(
        Decision::Proceed,
        format!(
            "dry run: backup {} would be created; nothing was written",
            d.would_create
        ),
    );
    r.rotation = Some(d.rotation.clone());
    r.space = Some(d.space.clone());
    r.warnings.extend(d.warnings.iter().cloned());
    r
}

/// A post_run response for a restore done.
pub fn restore_done(
    ctx: &Ctx,
    settings: &Settings,
    m: &Manifest,
    o: &restore::Outcome,
) -> Response {
    let reason = if o.unchanged {
        format!(
            "the database already was backup {} byte for byte, with no WAL beside it; nothing was moved",
            m.id
        )
    } else if o.quarantined.is_empty() {
        format!(
            "database restored from backup {}; nothing was replaced: the database did not exist",
            m.id
        )
    } else {
        format!(
            "database restored from backup {}; the replaced files are in {}",
            m.id,
            o.plan.quarantine.display()
        )
    };
    let mut r = ctx.ok(Decision::Restored, reason);
    r.backup = Some(backup_ref(settings, m));
    r.restore = Some(restore_ref(o));
    if let Some(j) = &o.finished_journal {
        r.reason = format!(
            "database restored from backup {} by finishing its interrupted restore (journal {}); the replaced files are in {}",
            m.id,
            j.display(),
            o.plan.quarantine.display()
        );
    }
    r
}

/// Puts the warnings every command reports first ([`crate::engine::standing_warnings`]:
/// interrupted restores of this database, a restore marker in trouble, ducksafe's folders left
/// open) first among a response's warnings, once: one the response already says (a folder
/// that could not be tightened) is not said twice.
pub fn surface_pending(r: &mut Response, settings: &Settings) {
    let mut warnings = crate::engine::standing_warnings(settings);
    warnings.retain(|w| !r.warnings.contains(w));
    if !warnings.is_empty() {
        warnings.append(&mut r.warnings);
        r.warnings = warnings;
    }
}

fn restore_ref(o: &restore::Outcome) -> RestoreRef {
    RestoreRef {
        backup_id: o.plan.backup_id.clone(),
        database: o.plan.database.display().to_string(),
        quarantine: o.plan.quarantine.display().to_string(),
        quarantined_files: o
            .quarantined
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        undo: o.plan.undo_commands(&o.quarantined),
        duration_ms: o.duration_ms,
        unchanged: o.unchanged,
    }
}
