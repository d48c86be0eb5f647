//! How to undo the run that follows a backup: the operator command that restores it, a ready
//! post_run request, and the manual steps for when ducksafe itself cannot run. The command and
//! the request carry every key that decided the database, so that running them as printed acts
//! on the same database whatever environment runs them.

use serde_json::json;

use crate::config::Settings;
use crate::engine::manifest::Manifest;
use crate::engine::shell;
use crate::protocol::{Rollback, PROTOCOL_VERSION};

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
