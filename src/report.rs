//! Turns engine outcomes into protocol responses (for the hook and every `--json`) and into
//! text for people. Nothing here decides anything; it only describes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde_json::json;

use crate::config::Settings;
use crate::engine::backup;
use crate::engine::manifest::Manifest;
use crate::engine::restore::{self, shell_quote};
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

/// The program to name in printed commands: this executable.
fn program() -> String {
    std::env::current_exe()
        .ok()
        .map_or_else(|| "ducksafe".to_owned(), |p| p.display().to_string())
}

/// The keys a rollback must carry so that it acts on the same database whatever the
/// environment it runs in: `DB_PATH` and `BACKUP_DIR` (absolute), every key that came from a
/// `DUCKSAFE_<KEY>` variable or a `--set`, and, without a configuration file, every key.
fn pinned_keys(settings: &Settings) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("DB_PATH".to_owned(), settings.db_path.display().to_string()),
        (
            "BACKUP_DIR".to_owned(),
            settings.backup_dir.display().to_string(),
        ),
    ];
    for key in crate::config::KEYS {
        if pairs.iter().any(|(k, _)| k == key) {
            continue;
        }
        if settings.config_path.is_some() && !settings.overridden.contains(&key) {
            continue;
        }
        let value = if key == "QUARANTINE_DIR" {
            Some(settings.quarantine_dir.display().to_string())
        } else {
            crate::config::value_text(&settings.config, key)
        };
        if let Some(v) = value {
            pairs.push((key.to_owned(), v));
        }
    }
    pairs
}

/// How to undo the run that follows a backup: the command, a ready post_run request, and the
/// manual steps (WAL files included) for when ducksafe itself is unavailable. The command and
/// the request carry everything that decided the database (see [`pinned_keys`]), so that
/// running them as printed acts on the same database.
pub fn rollback(settings: &Settings, m: &Manifest, request_id: &str) -> Rollback {
    let command = restore_command(settings, m);
    let pinned = pinned_keys(settings);
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
        manual: manual_restore_steps(settings, m),
    }
}

/// The argv of the operator command that restores exactly `m`: by id, refused if that id ever
/// names other content (`--expect-sha256`), with every key that decided the database pinned
/// (`--set`, see [`pinned_keys`]).
pub fn restore_command(settings: &Settings, m: &Manifest) -> Vec<String> {
    restore_argv(settings, &m.id, &m.sha256)
}

/// [`restore_command`] for the backup `id` whose SHA-256 is `sha256`.
pub fn restore_argv(settings: &Settings, id: &str, sha256: &str) -> Vec<String> {
    let mut command = vec![
        program(),
        "restore".to_owned(),
        id.to_owned(),
        "--expect-sha256".to_owned(),
        sha256.to_owned(),
    ];
    for (k, v) in pinned_keys(settings) {
        command.push("--set".into());
        command.push(format!("{k}={v}"));
    }
    if let Some(p) = &settings.config_path {
        command.push("--config".into());
        command.push(p.display().to_string());
    }
    command
}

/// [`restore_command`] as one line for a shell.
pub fn restore_command_line(settings: &Settings, m: &Manifest) -> String {
    restore_line(settings, &m.id, &m.sha256)
}

/// [`restore_argv`] as one line for a shell.
pub fn restore_line(settings: &Settings, id: &str, sha256: &str) -> String {
    restore_argv(settings, id, sha256)
        .iter()
        .map(|a| shell_quote(Path::new(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The line that ends a manual restore block: the heredoc's delimiter.
const MANUAL_END: &str = "END_OF_MANUAL_RESTORE";

/// Exact shell steps to restore `m` by hand, moving every WAL file aside first. They run as one
/// `sh -e` script: the first step that fails stops the rest (a bad checksum, a read-only
/// folder), and the database is replaced only by the last step. A `set -e` in the operator's own
/// shell would close it; `&&` lists are easy to break when edited; a separate `sh -e` does
/// neither.
fn manual_restore_steps(settings: &Settings, m: &Manifest) -> Vec<String> {
    let db = &settings.db_path;
    let root = restore::quarantine_root(settings);
    vec![
        format!(
            "# restore backup {} by hand, only when ducksafe itself cannot run. First stop every process that has the database open: `fuser -v {}` must list nothing. Then paste all the following lines at once.",
            m.id,
            shell_quote(db)
        ),
        format!(
            "sh -e <<'{MANUAL_END}' || {{ echo 'STOPPED at the failed step above: the database was NOT replaced (WAL files already moved are in the new _manual folder)' >&2; false; }}"
        ),
        format!("DB={}", shell_quote(db)),
        format!("B={}", shell_quote(&settings.backup_dir)),
        format!("ID={}", m.id),
        format!(
            "Q={}/${{ID}}_manual_$(date -u +%Y%m%d_%H%M%S)",
            shell_quote(&root)
        ),
        "cd \"$B\"".into(),
        "sha256sum -c \"$ID.duckdb.sha256\"".into(),
        "mkdir -p -m 700 \"$(dirname \"$Q\")\"".into(),
        "mkdir -m 700 \"$Q\"".into(),
        "cp \"$B/$ID.duckdb\" \"$DB.restoring\"".into(),
        "chmod 600 \"$DB.restoring\"".into(),
        "sync \"$DB.restoring\"".into(),
        "if [ -e \"$DB\" ]; then cp -p \"$DB\" \"$Q/\"; fi".into(),
        "for f in \"$DB.wal\" \"$DB.wal.checkpoint\" \"$DB.wal.recovery\"; do if [ -e \"$f\" ]; then mv \"$f\" \"$Q/\"; fi; done".into(),
        "mv \"$DB.restoring\" \"$DB\"".into(),
        "sync".into(),
        "echo \"restored $DB from backup $ID; the replaced database and its WAL files are in $Q\"".into(),
        MANUAL_END.into(),
    ]
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
    let id = name
        .strip_suffix(".manifest.json")
        .or_else(|| name.strip_suffix(".duckdb.sha256"))
        .unwrap_or(name);
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

/// Warnings, one per interrupted restore of this database: every command reports them first.
pub fn pending_warnings(settings: &Settings) -> Vec<String> {
    restore::pending(settings)
        .iter()
        .map(restore::Pending::line)
        .chain(restore::marker_trouble(settings))
        .collect()
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
pub fn print_pending(pending: &[restore::Pending]) {
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
