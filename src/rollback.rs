//! How to undo the run that follows a backup: the operator command that restores it, a ready
//! post_run request, and the manual steps for when ducksafe itself cannot run. The command and
//! the request carry every key that decided the database, so that running them as printed acts
//! on the same database whatever environment runs them.

use std::path::Path;

use serde_json::json;

use crate::config::Settings;
use crate::engine::manifest::Manifest;
use crate::engine::restore::{self, shell_quote};
use crate::protocol::{Rollback, PROTOCOL_VERSION};

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
