//! `ducksafe status`: the check's exit codes at each threshold (the age driven by the injected
//! clock, never by sleeping), the JSON report's figures against what the other commands say,
//! and the warnings: a last hook run that failed, an unfinished restore, quarantine folders.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::support::{self, abort_at, assert_ok, bin, pipe, request, Project};

/// `status` with `args`, `DUCKSAFE_NOW` set when given: (exit code, stdout).
fn status(p: &Project, now: Option<&str>, args: &[&str]) -> (i32, String) {
    let mut c = p.cmd(&[&["status"], args].concat());
    if let Some(now) = now {
        c.env("DUCKSAFE_NOW", now);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

fn status_json(p: &Project, now: Option<&str>, args: &[&str]) -> (i32, Value) {
    let (code, out) = status(p, now, &[&["--json"], args].concat());
    (code, serde_json::from_str(&out).unwrap())
}

/// The first line: a plugin summary starting with `DUCKSAFE <STATE> - `.
fn first_line(out: &str) -> &str {
    out.lines().next().unwrap_or("")
}

#[test]
fn exit_codes_follow_the_monitoring_convention_at_each_threshold() {
    let p = Project::new("");
    // No backup at all: critical.
    let (code, out) = status(&p, None, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        first_line(&out).starts_with("DUCKSAFE CRITICAL - no verified backup"),
        "{out}"
    );
    // A backup taken at T.
    let t = "2026-03-01T12:00:00Z";
    let mut c = p.cmd(&["backup"]);
    c.env("DUCKSAFE_NOW", t);
    assert_ok(&c.output().unwrap());
    // At T + 26h exactly (the default STATUS_MAX_AGE_HOURS): ok, with perfdata.
    let (code, out) = status(&p, Some("2026-03-02T14:00:00Z"), &[]);
    assert_eq!(code, 0, "{out}");
    let line = first_line(&out);
    assert!(line.starts_with("DUCKSAFE OK - "), "{out}");
    assert!(
        line.contains(" | age=93600s;;93600;0 backups=1;;;0 "),
        "{line}"
    );
    // One second later: critical.
    let (code, out) = status(&p, Some("2026-03-02T14:00:01Z"), &[]);
    assert_eq!(code, 2, "{out}");
    assert!(first_line(&out).starts_with("DUCKSAFE CRITICAL - newest verified backup"));
    // The threshold is the configuration's: 1 hour makes T + 2h critical.
    let (code, _) = status(
        &p,
        Some("2026-03-01T14:00:00Z"),
        &["--set", "STATUS_MAX_AGE_HOURS=1"],
    );
    assert_eq!(code, 2);
    let (code, _) = status(&p, Some("2026-03-01T14:00:00Z"), &[]);
    assert_eq!(code, 0);
    // Bytes at the budget: warning.
    let (_, j) = status_json(&p, Some("2026-03-01T13:00:00Z"), &[]);
    let used = j["backups_bytes"].as_u64().unwrap();
    assert!(used > 0);
    let budget = format!("BACKUP_MAX_TOTAL_BYTES={used}");
    let (code, out) = status(&p, Some("2026-03-01T13:00:00Z"), &["--set", &budget]);
    assert_eq!(code, 1, "{out}");
    assert!(first_line(&out).starts_with("DUCKSAFE WARNING - backups use"));
    let roomy = format!("BACKUP_MAX_TOTAL_BYTES={}", used * 2);
    let (code, _) = status(&p, Some("2026-03-01T13:00:00Z"), &["--set", &roomy]);
    assert_eq!(code, 0);
    // Not enough free space for the next backup: critical.
    let (code, out) = status(
        &p,
        Some("2026-03-01T13:00:00Z"),
        &["--set", "BACKUP_MIN_FREE_BYTES=1000000000000000"],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("insufficient_space"), "{out}");
    // What the next backup would refuse, however much room there is: critical, with the code.
    fs::set_permissions(p.backups(), fs::Permissions::from_mode(0o777)).unwrap();
    let (code, out) = status(&p, Some("2026-03-01T13:00:00Z"), &[]);
    fs::set_permissions(p.backups(), fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("backup_dir_unsafe"), "{out}");
    fs::rename(p.db(), p.path("moved.duckdb")).unwrap();
    let (code, out) = status(&p, Some("2026-03-01T13:00:00Z"), &[]);
    fs::rename(p.path("moved.duckdb"), p.db()).unwrap();
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("database_not_found"), "{out}");
    // A configuration that cannot be read: unknown, not 78.
    let (code, out) = status(&p, None, &["--set", "BACKUP_KEEP_LAST=0"]);
    assert_eq!(code, 3, "{out}");
    assert!(first_line(&out).starts_with("DUCKSAFE UNKNOWN - "), "{out}");
    let out = bin()
        .current_dir(p.dir.path())
        .args(["status", "--config", "missing.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn the_json_report_says_what_the_other_commands_say() {
    let p = Project::new("BACKUP_MAX_TOTAL_BYTES: 1000000000\n");
    assert_eq!(p.pre_run().1, 0);
    let list: Value = serde_json::from_slice(&p.run(&["list", "--json"]).stdout).unwrap();
    let newest = &list["backups"][0];
    let (code, j) = status_json(&p, None, &[]);
    assert_eq!(code, 0, "{j:#}");
    assert_eq!(j["state"], "ok");
    assert!(j["summary"].as_str().unwrap().starts_with("DUCKSAFE OK - "));
    assert_eq!(j["database"], p.db().display().to_string());
    assert_eq!(j["newest_verified"]["id"], newest["id"]);
    assert_eq!(j["newest_verified"]["verification_level"], "full");
    assert_eq!(j["backups"], 1);
    assert_eq!(j["backups_bytes"], list["total_bytes"]);
    assert_eq!(j["budget_bytes"], 1_000_000_000);
    assert_eq!(j["max_age_hours"], 26);
    assert!(j["free_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        j["next_backup_needs_bytes"].as_u64().unwrap(),
        fs::metadata(p.db()).unwrap().len()
    );
    assert_eq!(j["last_hook"]["event"], "pre_run");
    assert_eq!(j["last_hook"]["decision"], "proceed");
    assert!(j["last_backup_duration_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(j["unfinished_restores"], Value::Array(vec![]));
    assert_eq!(j["quarantine_folders"], Value::Array(vec![]));
    assert_eq!(j["findings"], Value::Array(vec![]));

    // A second database whose log is the same folder: its failures are not this one's.
    fs::copy(p.db(), p.path("other.duckdb")).unwrap();
    fs::write(
        p.path("other.yaml"),
        "DB_PATH: other.duckdb\nLOG_LEVEL: INFO\nBACKUP_DIR: other_backups\nBACKUP_MIN_FREE_BYTES: 0\n",
    )
    .unwrap();
    let holder = support::hold(&p.path("other.duckdb"));
    let mut c = bin();
    c.current_dir(p.dir.path()).arg("hook");
    let out = pipe(c, request("pre_run", &p.path("other.yaml"), "").as_bytes());
    drop(holder);
    assert_eq!(out.status.code(), Some(75));
    let (code, j) = status_json(&p, None, &[]);
    assert_eq!(
        (code, &j["last_hook"]["decision"]),
        (0, &Value::from("proceed"))
    );
    let other = bin()
        .current_dir(p.dir.path())
        .args(["status", "--json", "--config", "other.yaml"])
        .output()
        .unwrap();
    let o: Value = serde_json::from_slice(&other.stdout).unwrap();
    assert_eq!(o["last_hook"]["decision"], "abort", "{o:#}");
    assert_eq!(o["state"], "critical", "no backup of its own: {o:#}");
}

#[test]
fn a_failed_hook_run_an_unfinished_restore_and_quarantine_are_warnings() {
    let p = Project::new("");
    let (r, _) = p.pre_run();
    let id = r.backup.unwrap().id;
    // The last hook run was refused: warning, with its code.
    let holder = support::hold(&p.db());
    let (_, code) = p.pre_run();
    drop(holder);
    assert_eq!(code, 75);
    let (code, j) = status_json(&p, None, &[]);
    assert_eq!(code, 1, "{j:#}");
    assert_eq!(j["last_hook"]["status"], "error");
    assert_eq!(j["last_hook"]["errors"][0], "database_locked");
    assert!(j["findings"][0]["message"]
        .as_str()
        .unwrap()
        .contains("database_locked"));
    // A dry run that would proceed is no run: the refused one stays the last.
    let (r, code) = p.hook(&request("pre_run", &p.config(), r#","dry_run":true"#));
    assert_eq!((code, r.status), (0, ducksafe::protocol::Status::Ok));
    let (code, j) = status_json(&p, None, &[]);
    assert_eq!(
        (code, &j["last_hook"]["decision"]),
        (1, &Value::from("abort"))
    );
    // A good run clears it.
    assert_eq!(p.pre_run().1, 0);
    assert_eq!(status(&p, None, &[]).0, 0);
    // A restore interrupted after the database went to quarantine: unfinished, warning.
    support::write_into_wal(&p.db(), "DELETE FROM employees;");
    let _ = abort_at(p.cmd(&["restore", &id]), "restore.quarantined");
    let (code, j) = status_json(&p, None, &[]);
    assert_eq!(code, 1, "{j:#}");
    assert_eq!(j["unfinished_restores"].as_array().unwrap().len(), 1);
    assert_eq!(j["unfinished_restores"][0]["backup_id"], id.as_str());
    // Finished: no longer unfinished, but what it replaced is in quarantine.
    assert_ok(&p.run(&["restore", &id]));
    let (code, j) = status_json(&p, None, &[]);
    assert_eq!(code, 1, "{j:#}");
    assert_eq!(j["unfinished_restores"].as_array().unwrap().len(), 0);
    let folders = j["quarantine_folders"].as_array().unwrap();
    assert!(!folders.is_empty(), "{j:#}");
    assert!(j["quarantine_bytes"].as_u64().unwrap() > 0);
    let (_, text) = status(&p, None, &[]);
    assert!(
        first_line(&text).starts_with("DUCKSAFE WARNING - "),
        "{text}"
    );
    assert!(text.contains("folder(s) in quarantine"), "{text}");
    // Once the operator deletes them, all is well again.
    fs::remove_dir_all(p.backups().join("quarantine")).unwrap();
    let (code, out) = status(&p, None, &[]);
    assert_exit_ok(code, &out);
}

fn assert_exit_ok(code: i32, out: &str) {
    assert_eq!(code, 0, "{out}");
    assert!(first_line(out).starts_with("DUCKSAFE OK - "), "{out}");
}

#[test]
fn prometheus_file_is_written_atomically_and_readable_by_the_collector() {
    let p = Project::new("");
    assert_ok(&p.run(&["backup"]));
    let dir = p.path("textfile");
    fs::create_dir(&dir).unwrap();
    let prom = dir.join("ducksafe.prom");
    let (code, out) = status(&p, None, &["--prometheus-file", prom.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        first_line(&out).starts_with("DUCKSAFE OK - "),
        "stdout keeps the screen"
    );
    let text = fs::read_to_string(&prom).unwrap();
    assert!(text.contains("\nducksafe_backups{database="), "{text}");
    let mode = fs::metadata(&prom).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    assert_eq!(
        support::dir_names(&dir),
        ["ducksafe.prom"],
        "no temporary file left"
    );
    // A folder that does not exist: unknown, said, and nothing else written.
    let (code, out) = status(
        &p,
        None,
        &[
            "--prometheus-file",
            p.path("nowhere/x.prom").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("nowhere/x.prom"), "{out}");
    // Two formats for one stdout: a usage error, said.
    let out = p.run(&["status", "--json", "--prometheus"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(support::stderr(&out).contains("cannot be used together"));
}

/// A backup taken at `now`; returns its id.
fn backup_at(p: &Project, now: &str) -> String {
    let mut c = p.cmd(&["--json", "backup"]);
    c.env("DUCKSAFE_NOW", now);
    let out = c.output().unwrap();
    assert_ok(&out);
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    j["backup"]["id"].as_str().unwrap().to_owned()
}

fn cut_short(p: &Project, id: &str) {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(p.path(&format!("backups/{id}.duckdb")))
        .unwrap();
    f.set_len(100_000).unwrap();
}

#[test]
fn a_backup_cut_short_or_deleted_is_not_restorable() {
    let later = Some("2026-03-01T15:00:00Z");
    for how in ["truncated", "deleted"] {
        let p = Project::new("");
        let old = backup_at(&p, "2026-03-01T12:00:00Z");
        let new = backup_at(&p, "2026-03-01T13:00:00Z");
        let damage = |id: &str| match how {
            "truncated" => cut_short(&p, id),
            _ => fs::remove_file(p.path(&format!("backups/{id}.duckdb"))).unwrap(),
        };
        damage(&new);
        // The newest is damaged, an older one is intact: a warning naming both.
        let (code, out) = status(&p, later, &[]);
        assert_eq!(code, 1, "{how}: {out}");
        assert!(
            first_line(&out).starts_with(&format!(
                "DUCKSAFE WARNING - the newest backup `{new}` cannot be restored"
            )),
            "{how}: {out}"
        );
        let (_, j) = status_json(&p, later, &[]);
        assert_eq!(j["newest_verified"]["id"], old.as_str(), "{how}: {j}");
        assert_eq!(j["damaged_backups"][0]["id"], new.as_str(), "{how}: {j}");
        // None intact: critical.
        damage(&old);
        let (code, out) = status(&p, later, &[]);
        assert_eq!(code, 2, "{how}: {out}");
        assert!(
            first_line(&out).starts_with("DUCKSAFE CRITICAL - no restorable backup: 2 damaged"),
            "{how}: {out}"
        );
        let (_, prom) = status(&p, later, &["--prometheus"]);
        assert!(prom.contains("ducksafe_backups_damaged{"), "{prom}");
    }
}

#[test]
fn an_unreadable_manifest_is_a_warning() {
    let p = Project::new("");
    let old = backup_at(&p, "2026-03-01T12:00:00Z");
    backup_at(&p, "2026-03-01T13:00:00Z");
    fs::write(
        p.path(&format!("backups/{old}.manifest.json")),
        "{garbage\n",
    )
    .unwrap();
    let (code, out) = status(&p, Some("2026-03-01T15:00:00Z"), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "warning: the manifest `{}",
            p.path("backups").display()
        )) && out.contains(&format!("{old}.manifest.json` cannot be read")),
        "{out}"
    );
}

#[test]
fn packed_backups_need_their_packs_and_the_newest_file() {
    let p = Project::new("BACKUP_STORAGE: incremental\n");
    fs::remove_file(p.db()).unwrap();
    ducksafe::demo::create_sized(&p.db(), 9_016, 42_331).unwrap();
    let later = Some("2026-03-01T15:00:00Z");
    let old = backup_at(&p, "2026-03-01T12:00:00Z");
    ducksafe::workload::run(&p.db(), ducksafe::workload::Shape::Append, 1, 9_016, 42_331).unwrap();
    let new = backup_at(&p, "2026-03-01T13:00:00Z");
    let (code, out) = status(&p, later, &[]);
    assert_eq!(code, 0, "{out}");
    let (_, j) = status_json(&p, later, &[]);
    assert!(j["damaged_backups"].as_array().unwrap().is_empty(), "{j}");
    // The older backup is packed; its packs deleted, it cannot be rebuilt.
    let packs: Vec<_> = fs::read_dir(p.path("backups/packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!packs.is_empty());
    let kept: Vec<_> = packs
        .iter()
        .map(|f| (f.clone(), fs::read(f).unwrap()))
        .collect();
    for f in &packs {
        fs::remove_file(f).unwrap();
    }
    let (code, out) = status(&p, later, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        first_line(&out).starts_with(&format!(
            "DUCKSAFE WARNING - backup `{old}` cannot be restored"
        )),
        "{out}"
    );
    // Packs back, the newest file cut short: every backup is built from it.
    for (f, bytes) in kept {
        fs::write(f, bytes).unwrap();
    }
    cut_short(&p, &new);
    let (code, out) = status(&p, later, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        first_line(&out).starts_with("DUCKSAFE CRITICAL - no restorable backup: 2 damaged"),
        "{out}"
    );
}

/// A request id (or anything else the audit log says) cannot forge perfdata, a status line or
/// a terminal control sequence: control characters are escaped, `|` is kept off line 1.
#[test]
fn untrusted_strings_cannot_forge_lines_perfdata_or_escapes() {
    let p = Project::new("");
    assert_eq!(p.pre_run().1, 0);
    let holder = support::hold(&p.db());
    assert_eq!(p.pre_run().1, 75);
    drop(holder);
    // The log's last line, its request id replaced by an attacker's.
    let log = p.path("logs/ducksafe.jsonl");
    let text = fs::read_to_string(&log).unwrap();
    let mut last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    last["request_id"] = "evil | fake=1;;;0\nDUCKSAFE OK - all fine\u{1b}[2J\u{7}".into();
    fs::write(&log, format!("{text}{last}\n")).unwrap();
    let (code, out) = status(&p, None, &[]);
    assert_eq!(code, 1, "{out}");
    let first = first_line(&out);
    assert!(
        first.starts_with("DUCKSAFE WARNING - the last hook run"),
        "{out}"
    );
    assert_eq!(first.matches('|').count(), 1, "{first}");
    assert!(first.contains("evil ¦ fake=1;;;0\\nDUCKSAFE OK"), "{first}");
    assert!(
        !out.lines().skip(1).any(|l| l.starts_with("DUCKSAFE")),
        "{out}"
    );
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
    assert!(out.contains("\\u{1b}[2J\\u{7}"), "{out}");
    // A database path with a newline: the backups are another database's, unknown, and the
    // one line says so with the path escaped.
    p.write_config("DB_PATH: \"sim\\nDUCKSAFE OK - x.duckdb\"\nLOG_LEVEL: INFO\n");
    let (code, out) = status(&p, None, &[]);
    assert_eq!(code, 3, "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("sim\\nDUCKSAFE OK - x.duckdb`"), "{out}");
}

/// An invalid configuration: the one series is labelled with its database (DB_PATH from the
/// file), or the file itself when even that cannot be read, so two broken checks stay two
/// series; `--json` has the figures it could not gather null, never 0.
#[test]
fn an_invalid_configuration_is_labelled_and_its_figures_are_null() {
    let p = Project::new("");
    assert_ok(&p.run(&["backup"]));
    p.write_config("DB_PATH: simulation.duckdb\nLOG_LEVEL: INFO\nBOGUS: 1\n");
    let (code, prom) = status(&p, None, &["--prometheus"]);
    assert_eq!(code, 3, "{prom}");
    let samples: Vec<&str> = prom.lines().filter(|l| !l.starts_with('#')).collect();
    let db = p.db().display().to_string();
    assert_eq!(samples, [format!("ducksafe_status{{database=\"{db}\"}} 3")]);
    let (code, j) = status_json(&p, None, &[]);
    assert_eq!(code, 3);
    assert_eq!(j["database"], db.as_str());
    for k in [
        "backups",
        "backups_bytes",
        "free_bytes",
        "newest_verified",
        "quarantine_bytes",
    ] {
        assert!(j[k].is_null(), "{k}: {j:#}");
    }
    // Not even YAML: the file's path.
    fs::write(p.config(), "{garbage").unwrap();
    let (_, prom) = status(&p, None, &["--prometheus"]);
    let config = p.config().display().to_string();
    assert!(
        prom.contains(&format!("ducksafe_status{{database=\"{config}\"}} 3")),
        "{prom}"
    );
}

/// A log others could have written is said to be untrusted: its folder open to others' writes
/// (through a symlink too), or a log file another user owns.
#[test]
fn an_audit_log_others_could_write_is_a_warning() {
    use std::os::unix::fs::MetadataExt;
    let p = Project::new("");
    assert_eq!(p.pre_run().1, 0);
    let (code, out) = status(&p, None, &[]);
    assert_exit_ok(code, &out);
    // LOG_DIR a symlink to a world-writable folder.
    let open = p.path("open-logs");
    fs::rename(p.path("logs"), &open).unwrap();
    std::os::unix::fs::symlink(&open, p.path("logs")).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let (code, out) = status(&p, None, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("warning: the audit log folder"), "{out}");
    assert!(out.contains("could be forged"), "{out}");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o700)).unwrap();
    let (code, out) = status(&p, None, &[]);
    assert_exit_ok(code, &out);
    // A log file another user owns (only root can make one).
    let log = open.join("ducksafe.jsonl");
    if fs::metadata(&open).unwrap().uid() != 0 {
        support::skip("a log owned by another user", "chown needs root");
        return;
    }
    std::os::unix::fs::chown(&log, Some(65534), None).unwrap();
    let (code, out) = status(&p, None, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is owned by uid 65534"), "{out}");
}

/// The hook ran through a symlinked project path: its record names the database by that path,
/// and status, given the real one, still finds its last run.
#[test]
fn the_last_hook_run_is_found_through_a_symlinked_project_path() {
    let p = Project::new("");
    let link = p.path("../").join(format!(
        "{}-link",
        p.dir.path().file_name().unwrap().to_string_lossy()
    ));
    std::os::unix::fs::symlink(p.dir.path(), &link).unwrap();
    let holder = support::hold(&p.db());
    let (_, code) = p.hook(&request("pre_run", &link.join("config.yaml"), ""));
    drop(holder);
    assert_eq!(code, 75);
    let (code, j) = status_json(&p, None, &[]);
    fs::remove_file(&link).unwrap();
    assert_eq!(j["last_hook"]["errors"][0], "database_locked", "{j:#}");
    assert_eq!(code, 2, "{j:#}");
}

/// A FIFO planted at a manifest's name is no manifest: status (and every command listing the
/// backups) says it cannot be read instead of waiting on it forever.
#[test]
fn a_fifo_at_a_manifest_name_hangs_nothing() {
    let p = Project::new("");
    assert_ok(&p.run(&["backup"]));
    crate::audit::mkfifo(&p.path("backups/simulation_20990101_000000.manifest.json"));
    let out = crate::audit::within_a_minute(p.cmd(&["status"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("not a regular file"), "{text}");
    assert_ok(&crate::audit::within_a_minute(p.cmd(&["list"])));
}
