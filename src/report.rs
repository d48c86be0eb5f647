//! Turns engine outcomes into protocol responses (for the hook and every `--json`) and into
//! text for people. Nothing here decides anything; it only describes.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::json;

use crate::config::Settings;
use crate::engine::backup;
use crate::engine::journal;
use crate::engine::manifest::Manifest;
use crate::engine::restore;
use crate::engine::shell;
use crate::engine::store;
use crate::error::Error;
use crate::protocol::{
    BackupRef, Decision, ErrorEntry, Response, RestoreRef, Rollback, Status, PROTOCOL_VERSION,
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
            rotation: None,
            space: None,
            restore: None,
            run: None,
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

/// How to undo the run that follows a backup: the command, a ready post_run request, and the
/// manual steps (WAL files included) for when ducksafe itself is unavailable. The command and
/// the request carry everything that decided the database (see [`shell::pinned_keys`]), so that
/// running them as printed acts on the same database.
pub fn rollback(settings: &Settings, m: &Manifest, request_id: &str) -> Rollback {
    let command = shell::restore_argv(settings, &m.id, &m.sha256);
    let pinned = shell::pinned_keys(settings);
    let config = if let Some(p) = &settings.config_path {
        json!({"path": p.display().to_string()})
    } else {
        // Inline or environment-only: absolute paths, so the request works from any folder.
        let mut c = settings.config.clone();
        c.db_path = settings.db_path.display().to_string();
        c.backup_dir = settings.backup_dir.display().to_string();
        c.quarantine_dir = Some(settings.quarantine_dir.display().to_string());
        json!({ "inline": c })
    };
    let set: serde_json::Map<String, serde_json::Value> = pinned
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    let request = json!({
        "protocol_version": PROTOCOL_VERSION,
        "event": "post_run",
        "request_id": request_id,
        "config": config,
        "set": set,
        "backup_id": m.id,
        "backup_sha256": m.sha256,
        "run": {"outcome": "failure"},
        "on_failure": "restore",
    });
    Rollback {
        strategy: "restore_backup".into(),
        backup_id: m.id.clone(),
        command,
        request,
        manual: shell::manual_restore(settings, m, &crate::engine::quarantine::root(settings)),
    }
}

/// A pre_run response for a backup taken.
pub fn backup_done(ctx: &Ctx, settings: &Settings, o: &backup::Outcome) -> Response {
    let mut r = ctx.ok(
        Decision::Proceed,
        format!("backup {} created and verified", o.manifest.id),
    );
    r.backup = Some(backup_ref(settings, &o.manifest));
    r.rollback = Some(rollback(settings, &o.manifest, &ctx.request_id));
    r.rotation = Some(o.rotation.clone());
    r.space = Some(o.space.clone());
    r.warnings.extend(o.warnings.iter().cloned());
    r.warnings
        .extend(o.cleaned.iter().map(|n| cleaned_note(n, &o.cleaned)));
    r.warnings.extend(o.recovered.iter().cloned());
    r
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

/// Warnings every command reports first (see [`crate::engine::standing_warnings`]).
pub fn pending_warnings(settings: &Settings) -> Vec<String> {
    crate::engine::standing_warnings(settings)
}

/// Puts the interrupted restores of this database first among a response's warnings.
pub fn surface_pending(r: &mut Response, settings: &Settings) {
    let mut warnings = pending_warnings(settings);
    if !warnings.is_empty() {
        warnings.append(&mut r.warnings);
        r.warnings = warnings;
    }
}

/// Prints interrupted restores for people: what, where, and the ways out.
pub fn print_pending(pending: &[journal::Pending]) {
    for p in pending {
        println!(
            "UNFINISHED RESTORE of backup `{}`, started {} (journal `{}`):",
            p.backup_id,
            p.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            p.journal.display()
        );
        println!("  {}", p.state);
        println!("  to finish it:  {}", p.finish);
        println!("  or to undo it instead (with nothing using the database):");
        for l in &p.undo {
            println!("    {l}");
        }
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

/// Prints a failure for people on stderr: `ducksafe: error: …` then `hint: …` lines.
pub fn print_error(err: &Error) {
    print_entries(&err.entries());
}

/// Prints protocol error entries for people on stderr.
pub fn print_entries(entries: &[ErrorEntry]) {
    for e in entries {
        match &e.path {
            Some(p) if !p.is_empty() => eprintln!("ducksafe: error: {} (at `{p}`)", e.message),
            _ => eprintln!("ducksafe: error: {}", e.message),
        }
        if let Some(h) = &e.hint {
            eprintln!("  hint: {h}");
        }
    }
}

/// Prints warnings for people on stderr.
pub fn print_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("ducksafe: warning: {w}");
    }
}

/// `12.3 MiB` for people.
pub use crate::error::human_bytes as size;

/// Prints one JSON value as a single line on stdout.
pub fn print_json_line(v: &impl serde::Serialize) {
    use std::io::Write;
    // A caller that closed its end of the pipe must not turn a finished backup into a panic.
    let line = serde_json::to_string(v).unwrap_or_else(|_| "{}".to_owned());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Prints one JSON value, pretty, on stdout.
pub fn print_json_pretty(v: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".to_owned())
    );
}
