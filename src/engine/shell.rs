//! The shell lines ducksafe hands to people: the command that restores one backup, the manual
//! restore for when ducksafe itself cannot run, and the `mv` lines that undo a restore. Pure:
//! they are decided here and only printed elsewhere.
//!
//! Invariants:
//! - Every path is quoted for a POSIX shell ([`quote`]).
//! - A restore command acts on the same database whatever the environment it runs in: this
//!   binary by its absolute path, the backup's SHA-256 expected, and every key that decided the
//!   database pinned ([`pinned_keys`]).
//! - Undo lines put the database back before its WAL files: a WAL never sits beside a file it
//!   does not belong to.

use std::path::{Path, PathBuf};

use super::manifest::Manifest;
use crate::config::{self, Settings};

/// Quotes a path for a POSIX shell.
pub fn quote(p: &Path) -> String {
    let s = p.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
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
pub fn pinned_keys(settings: &Settings) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("DB_PATH".to_owned(), settings.db_path.display().to_string()),
        (
            "BACKUP_DIR".to_owned(),
            settings.backup_dir.display().to_string(),
        ),
    ];
    for key in config::KEYS {
        if pairs.iter().any(|(k, _)| k == key) {
            continue;
        }
        if settings.config_path.is_some() && !settings.overridden.contains(&key) {
            continue;
        }
        // How much the restore logs decides nothing about what it restores: `-v` on the
        // pre-run is not carried into its rollback.
        if settings.config_path.is_some() && key == "LOG_LEVEL" {
            continue;
        }
        let value = if key == "QUARANTINE_DIR" {
            Some(settings.quarantine_dir.display().to_string())
        } else {
            config::value_text(&settings.config, key)
        };
        if let Some(v) = value {
            pairs.push((key.to_owned(), v));
        }
    }
    pairs
}

/// The argv of the operator command that restores exactly the backup `id` whose SHA-256 is
/// `sha256`: by id, refused if that id ever names other content (`--expect-sha256`), with every
/// key that decided the database pinned (`--set`, see [`pinned_keys`]).
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

/// [`restore_argv`] as one line for a shell.
pub fn restore_line(settings: &Settings, id: &str, sha256: &str) -> String {
    restore_argv(settings, id, sha256)
        .iter()
        .map(|a| quote(Path::new(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `mv -f` lines that put quarantined files back where they came from: the database first (a
/// WAL must never sit beside a file it does not belong to), then its WAL files. Only the moves
/// whose destination is in `quarantined` are undone; files that came late (`.late1`) are not
/// part of the replaced state and stay in quarantine.
pub fn put_back(
    database: &Path,
    moves: &[(PathBuf, PathBuf)],
    quarantined: &[PathBuf],
) -> Vec<String> {
    let mut ordered: Vec<&(PathBuf, PathBuf)> = moves
        .iter()
        .filter(|(_, to)| quarantined.contains(to))
        .collect();
    ordered.sort_by_key(|(from, _)| from != database);
    ordered
        .into_iter()
        .map(|(from, to)| format!("mv -f {} {}", quote(to), quote(from)))
        .collect()
}

/// The line that ends a manual restore block: the heredoc's delimiter.
const MANUAL_END: &str = "END_OF_MANUAL_RESTORE";

/// Exact shell steps to restore `m` by hand, moving every WAL file aside first into a new
/// folder of the quarantine root `quarantine` (see `quarantine::root`). They run as one
/// `sh -e` script: the first step that fails stops the rest (a bad checksum, a read-only
/// folder), and the database is replaced only by the last step. A `set -e` in the operator's own
/// shell would close it; `&&` lists are easy to break when edited; a separate `sh -e` does
/// neither.
pub fn manual_restore(settings: &Settings, m: &Manifest, quarantine: &Path) -> Vec<String> {
    let db = &settings.db_path;
    vec![
        format!(
            "# restore backup {} by hand, only when ducksafe itself cannot run. First stop every process that has the database open: `fuser -v {}` must list nothing. Then paste all the following lines at once.",
            m.id,
            quote(db)
        ),
        format!(
            "sh -e <<'{MANUAL_END}' || {{ echo 'STOPPED at the failed step above: the database was NOT replaced (WAL files already moved are in the new _manual folder)' >&2; false; }}"
        ),
        format!("DB={}", quote(db)),
        format!("B={}", quote(&settings.backup_dir)),
        format!("ID={}", m.id),
        format!(
            "Q={}/${{ID}}_manual_$(date -u +%Y%m%d_%H%M%S)",
            quote(quarantine)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_puts_the_database_back_before_its_wal_and_leaves_late_files() {
        let db = PathBuf::from("/d/sim.duckdb");
        let q = PathBuf::from("/q");
        let moves = vec![
            (PathBuf::from("/d/sim.duckdb.wal"), q.join("sim.duckdb.wal")),
            (db.clone(), q.join("sim.duckdb")),
        ];
        let quarantined = vec![
            q.join("sim.duckdb.wal"),
            q.join("sim.duckdb"),
            q.join("sim.duckdb.wal.late1"),
        ];
        assert_eq!(
            put_back(&db, &moves, &quarantined),
            [
                "mv -f /q/sim.duckdb /d/sim.duckdb",
                "mv -f /q/sim.duckdb.wal /d/sim.duckdb.wal"
            ]
        );
        // Only what was really moved is put back.
        assert_eq!(
            put_back(&db, &moves, &[q.join("sim.duckdb.wal")]),
            ["mv -f /q/sim.duckdb.wal /d/sim.duckdb.wal"]
        );
    }

    #[test]
    fn quote_is_safe() {
        assert_eq!(quote(Path::new("/a/b.duckdb")), "/a/b.duckdb");
        assert_eq!(quote(Path::new("/a b/it's")), "'/a b/it'\\''s'");
    }
}
