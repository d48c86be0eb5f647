//! Hook protocol v1 on bad input: one JSON line and the documented code, every time.

use crate::support::{
    self, assert_exit, assert_ok, bin, one_response, pipe, with_closed_stdout, Project,
};
use ducksafe::protocol::{Decision, ErrorCode, Status};

fn hook_raw(input: &[u8]) -> ducksafe::protocol::Response {
    let dir = tempfile::tempdir().unwrap();
    let mut c = bin();
    c.current_dir(dir.path()).arg("hook");
    one_response(&pipe(c, input))
}

#[test]
fn malformed_json_is_invalid_request() {
    let r = hook_raw(b"{\"protocol_version\": 1, \"event\": ");
    assert_eq!(r.exit_code, 65);
    assert_eq!(r.status, Status::Error);
    assert_eq!(r.decision, Decision::Abort);
    assert_eq!(r.errors[0].code, ErrorCode::InvalidRequest);
    assert!(!r.errors[0].retryable);
    assert!(!r.request_id.is_empty(), "a request id is generated");
}

#[test]
fn empty_stdin_is_invalid_request() {
    for input in [&b""[..], b"  \n"] {
        let r = hook_raw(input);
        assert_eq!(r.exit_code, 65);
        assert_eq!(r.errors[0].code, ErrorCode::InvalidRequest);
        assert!(r.errors[0].message.contains("empty"));
    }
}

#[test]
fn non_objects_and_invalid_utf8_are_invalid_requests() {
    for input in [
        &b"[1,2]"[..],
        b"42",
        b"\"pre_run\"",
        b"\xff\xfe{}",
        b"{} {}",
    ] {
        let r = hook_raw(input);
        assert_eq!(r.exit_code, 65, "{input:?}");
        assert_eq!(r.errors[0].code, ErrorCode::InvalidRequest);
    }
}

#[test]
fn an_oversized_stdin_is_refused() {
    let mut big = br#"{"protocol_version":1,"event":"validate","request_id":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 2 << 20));
    big.extend(br#""}"#);
    let r = hook_raw(&big);
    assert_eq!(r.exit_code, 65);
    assert!(r.errors[0].message.contains("larger than"));
}

#[test]
fn an_unknown_event_is_unsupported_event_and_the_request_id_is_echoed() {
    let r = hook_raw(br#"{"protocol_version":1,"event":"post_flight","request_id":"run-7"}"#);
    assert_eq!(r.exit_code, 65);
    assert_eq!(r.errors[0].code, ErrorCode::UnsupportedEvent);
    assert_eq!(r.request_id, "run-7");
    assert_eq!(r.event.as_deref(), Some("post_flight"));
}

#[test]
fn an_unsupported_protocol_version_lists_the_supported_ones() {
    let r = hook_raw(br#"{"protocol_version":2,"event":"pre_run"}"#);
    assert_eq!(r.exit_code, 76);
    assert_eq!(r.errors[0].code, ErrorCode::UnsupportedProtocolVersion);
    assert_eq!(r.supported_versions, Some(vec![1]));
}

#[test]
fn a_request_that_fails_the_schema_lists_every_problem() {
    let r = hook_raw(br#"{"event":"post_run","dry_run":"yes","run":{"outcome":"maybe"}}"#);
    assert_eq!(r.exit_code, 65);
    assert!(r.errors.len() >= 3, "{:?}", r.errors);
    assert!(r.errors.iter().all(|e| e.code == ErrorCode::InvalidRequest));
}

#[test]
fn a_missing_config_file_is_config_not_found() {
    let r = hook_raw(br#"{"protocol_version":1,"event":"pre_run","config":{"path":"nope.yaml"}}"#);
    assert_eq!(r.exit_code, 66);
    assert_eq!(r.errors[0].code, ErrorCode::ConfigNotFound);
}

#[test]
fn an_invalid_configuration_lists_every_violation_with_its_pointer() {
    let r = hook_raw(
        br#"{"protocol_version":1,"event":"validate","config":{"inline":{
            "DB_PATH": "", "LOG_LEVEL": "LOUD", "BACKUP_KEEP_LAST": 0,
            "BACKUP_RETENTON_DAYS": 7, "VERIFY_LEVEL": "paranoid", "API_TOKEN": "hunter2"}}}"#,
    );
    assert_eq!(r.exit_code, 78);
    assert_eq!(r.decision, Decision::Invalid);
    let paths: Vec<&str> = r.errors.iter().filter_map(|e| e.path.as_deref()).collect();
    for p in [
        "/DB_PATH",
        "/LOG_LEVEL",
        "/BACKUP_KEEP_LAST",
        "/BACKUP_RETENTON_DAYS",
        "/VERIFY_LEVEL",
        "/API_TOKEN",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
    assert!(r.errors.iter().all(|e| e.code == ErrorCode::ConfigInvalid));
    let typo = r
        .errors
        .iter()
        .find(|e| e.path.as_deref() == Some("/BACKUP_RETENTON_DAYS"))
        .unwrap();
    assert_eq!(
        typo.hint.as_deref(),
        Some("did you mean `BACKUP_RETENTION_DAYS`?")
    );
    let keep = r
        .errors
        .iter()
        .find(|e| e.path.as_deref() == Some("/BACKUP_KEEP_LAST"))
        .unwrap();
    assert!(
        keep.message.contains('0'),
        "the offending value is shown: {}",
        keep.message
    );
    let line = serde_json::to_string(&r).unwrap();
    assert!(!line.contains("hunter2"), "secrets never echo: {line}");
}

#[test]
fn the_seed_quick_start_config_validates() {
    let p = Project::new("");
    p.write_config("DB_PATH: simulation.duckdb\nLOG_LEVEL: INFO\nBACKUP_RETENTION_DAYS: 7\n");
    let (r, code) = p.hook(&format!(
        r#"{{"protocol_version":1,"event":"validate","config":{{"path":"{}"}}}}"#,
        p.config().display()
    ));
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(r.decision, Decision::Valid);
}

#[test]
fn unknown_request_fields_are_ignored_with_a_warning() {
    let p = Project::new("");
    let (r, code) = p.hook(&format!(
        r#"{{"protocol_version":1,"event":"validate","caller":"make","config":{{"path":"{}"}}}}"#,
        p.config().display()
    ));
    assert_eq!(code, 0, "{r:?}");
    assert!(r.warnings.iter().any(|w| w.contains("`caller`")));
}

#[test]
fn environment_variables_override_the_file() {
    let p = Project::new("");
    let (r, code) = p.hook_env(
        &format!(
            r#"{{"protocol_version":1,"event":"validate","config":{{"path":"{}"}}}}"#,
            p.config().display()
        ),
        &[("DUCKSAFE_DB_PATH", "missing.duckdb")],
    );
    assert_eq!(code, 66, "{r:?}");
    assert_eq!(r.errors[0].code, ErrorCode::DatabaseNotFound);
}

#[test]
fn post_run_success_keeps_and_failure_without_restore_keeps() {
    let p = Project::new("");
    let (pre, _) = p.pre_run();
    let id = pre.backup.unwrap().id;
    for (outcome, extra, decision) in [
        ("success", "", Decision::Kept),
        ("failure", "", Decision::Kept),
        ("failure", r#","on_failure":"keep""#, Decision::Kept),
    ] {
        let (r, code) = p.hook(&format!(
            r#"{{"protocol_version":1,"event":"post_run","backup_id":"{id}","run":{{"outcome":"{outcome}","exit_code":1}}{extra},"config":{{"path":"{}"}}}}"#,
            p.config().display()
        ));
        assert_eq!(code, 0, "{r:?}");
        assert_eq!(r.decision, decision);
    }
}

#[test]
fn the_validate_command_answers_like_the_hook() {
    let p = Project::new("");
    let out = p.run(&["validate", "--json"]);
    let r = one_response(&out);
    assert_eq!(r.decision, Decision::Valid);
    p.write_config("DB_PATH: simulation.duckdb\nLOG_LEVEL: LOUD\n");
    let out = p.run(&["validate", "--json"]);
    let r = one_response(&out);
    assert_eq!(r.exit_code, 78);
    assert_eq!(r.decision, Decision::Invalid);
    assert!(String::from_utf8_lossy(&out.stderr).contains("LOG_LEVEL"));
}

/// Without `--json`, `validate` answers people, not programs: the verdict on stdout, problems on
/// stderr, no JSON anywhere, and the hook's exit code.
#[test]
fn the_validate_command_prints_json_only_when_asked() {
    let p = Project::new("");
    let out = p.run(&["validate"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ok(&out);
    assert_eq!(
        stdout.trim_end(),
        "configuration is valid and the database is readable"
    );
    p.write_config("DB_PATH: simulation.duckdb\nLOG_LEVEL: LOUD\n");
    let out = p.run(&["validate"]);
    assert_exit(&out, 78);
    assert!(
        out.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("ducksafe: error: `LOG_LEVEL`") && !stderr.contains('{'),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_64() {
    let out = bin().arg("frobnicate").output().unwrap();
    assert_exit(&out, 64);
    assert!(out.stdout.is_empty(), "no JSON for an unknown command");
    // The hook's flag form still answers its one JSON line on a usage error.
    let out = bin().args(["post-run"]).output().unwrap();
    assert_exit(&out, 64);
    let r = one_response(&out);
    assert_eq!(r.decision, Decision::Skipped);
    assert_eq!(r.errors[0].code, ErrorCode::Usage);
    assert_eq!(r.exit_code, 64);
}

/// A panic anywhere in a request is answered with `internal` on one line (exit 70), and nothing
/// unverified is published.
#[test]
fn a_panic_is_answered_with_internal_on_one_line() {
    for point in ["backup.locked", "snapshot.copied", "backup.verified"] {
        let p = Project::new("");
        let (r, code) = p.pre_run_env(&[("DUCKSAFE_FAILPOINT", &format!("{point}:panic"))]);
        assert_eq!(code, 70, "{point}: {r:?}");
        assert_eq!(r.errors[0].code, ErrorCode::Internal, "{point}");
        // The panic answered is the failpoint's, not one from elsewhere.
        assert!(
            r.errors[0]
                .message
                .contains(&format!("failpoint `{point}`: panicking")),
            "{point}: {}",
            r.errors[0].message
        );
        assert_eq!(r.decision, Decision::Abort);
        assert!(
            p.backup_files().is_empty(),
            "{point}: {:?}",
            p.backup_files()
        );
    }
}

/// `on_failure` in the request decides over `RESTORE_ON_FAILURE`, both ways.
#[test]
fn on_failure_in_the_request_overrides_the_configuration() {
    for (configured, asked, decision) in [
        ("false", "restore", Decision::Restored),
        ("true", "keep", Decision::Kept),
        ("true", "", Decision::Restored),
        ("false", "", Decision::Kept),
    ] {
        let p = Project::new(&format!("RESTORE_ON_FAILURE: {configured}\n"));
        let (pre, _) = p.pre_run();
        let id = pre.backup.unwrap().id;
        support::write_into_wal(&p.db(), "CREATE TABLE the_run AS SELECT 1 AS x;");
        let extra = if asked.is_empty() {
            String::new()
        } else {
            format!(r#","on_failure":"{asked}""#)
        };
        let (r, code) = p.hook(&format!(
            r#"{{"protocol_version":1,"event":"post_run","backup_id":"{id}","run":{{"outcome":"failure"}}{extra},"config":{{"path":"{}"}}}}"#,
            p.config().display()
        ));
        assert_eq!(code, 0, "{r:?}");
        assert_eq!(
            r.decision, decision,
            "RESTORE_ON_FAILURE {configured}, on_failure {asked:?}"
        );
        let wal = p.path("simulation.duckdb.wal").exists();
        assert_eq!(
            wal,
            decision == Decision::Kept,
            "the run's WAL after {decision:?}"
        );
    }
}

/// Without `config` in the request, `$DUCKSAFE_CONFIG` names the file, from any folder.
#[test]
fn the_configuration_is_found_through_ducksafe_config() {
    let p = Project::new("");
    let elsewhere = tempfile::tempdir().unwrap();
    let mut c = bin();
    c.current_dir(elsewhere.path())
        .env("DUCKSAFE_CONFIG", p.config())
        .arg("hook");
    let r = one_response(&pipe(c, br#"{"protocol_version":1,"event":"pre_run"}"#));
    assert_eq!(r.decision, Decision::Proceed, "{r:?}");
    assert_eq!(p.backup_files().len(), 1);
}

/// `rollback.command[0]` is this binary's absolute path, and the command works as printed,
/// from any folder.
#[test]
fn the_rollback_command_runs_as_printed() {
    let p = Project::new("");
    let (pre, _) = p.pre_run();
    let rb = pre.rollback.unwrap();
    assert_eq!(
        std::path::Path::new(&rb.command[0]),
        std::path::Path::new(env!("CARGO_BIN_EXE_ducksafe"))
    );
    support::write_into_wal(&p.db(), "CREATE TABLE the_run AS SELECT 1 AS x;");
    let elsewhere = tempfile::tempdir().unwrap();
    let out = support::command(&rb.command[0])
        .args(&rb.command[1..])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    support::assert_ok(&out);
    assert!(!p.path("simulation.duckdb.wal").exists());
}

/// protocol_version must be the JSON number 1: `1.0` is an unsupported version (76), `"1"` a
/// request that breaks its schema (65).
#[test]
fn protocol_version_is_the_number_one() {
    let r = hook_raw(br#"{"protocol_version":1.0,"event":"validate"}"#);
    assert_eq!(r.exit_code, 76, "{r:?}");
    assert_eq!(r.errors[0].code, ErrorCode::UnsupportedProtocolVersion);
    let r = hook_raw(br#"{"protocol_version":"1","event":"validate"}"#);
    assert_eq!(r.exit_code, 65, "{r:?}");
    assert_eq!(r.errors[0].code, ErrorCode::InvalidRequest);
}

/// A closed stdout (`ducksafe list | head -1`) ends the process quietly with success, as ripgrep
/// and fd do: no panic message. The read end is closed before the process starts, so every
/// write fails, whatever the timing. Several backups: more than one line, more than one write;
/// every kind of report, text and JSON.
#[test]
fn a_closed_stdout_ends_quietly_with_success() {
    let p = Project::new("BACKUP_KEEP_LAST: 5\n");
    for _ in 0..3 {
        let (r, code) = p.pre_run();
        assert_eq!(code, 0, "{r:?}");
    }
    for args in [
        vec!["list", "--json"],
        vec!["list"],
        vec!["verify", "--all"],
        vec!["verify", "--all", "--json"],
        vec!["prune", "--dry-run"],
        vec!["backup", "--dry-run"],
        vec!["restore", "--dry-run"],
        vec!["validate"],
        vec!["schema", "config"],
    ] {
        let out = with_closed_stdout(p.cmd(&args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

/// The lease of a guarded run counts only while its process lives: a lease naming PID 1 with
/// its real start time (alive, not this caller) refuses a pre_run with `lock_busy`; the same
/// PID with another start time (a reused PID) and a PID that is gone do not.
#[test]
fn a_guarded_runs_lease_counts_only_while_its_process_lives() {
    let p = Project::new("BACKUP_KEEP_LAST: 5\n");
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    let id = r.backup.unwrap().id;
    // `latest` moves on: the lease below names a backup that only it protects.
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    let start_of = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        rest.split_whitespace().nth(19).unwrap().parse().unwrap()
    };
    let gone = {
        let mut c = support::command("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    let lease = p.backups().join(ducksafe::engine::lease::NAME);
    for (pid, start, busy) in [
        (1, start_of(1), true),
        (1, start_of(1) + 1, false),
        (gone, 12_345, false),
    ] {
        std::fs::write(
            &lease,
            format!(
                r#"{{"pid":{pid},"start":{start},"backup_id":"{id}","since":"2026-12-01T00:00:00Z"}}"#
            ),
        )
        .unwrap();
        if busy {
            // No other restore while that run is in progress: an older run's rollback, an
            // operator's command. Nor can `delete` take the backup that run may restore.
            let before = std::fs::read(p.db()).unwrap();
            let out = p.run(&["restore", &id]);
            assert_exit(&out, 75);
            let (r, code) = p.hook(&format!(
                r#"{{"protocol_version":1,"event":"post_run","backup_id":"{id}","run":{{"outcome":"failure"}},"on_failure":"restore","config":{{"path":"{}"}}}}"#,
                p.config().display()
            ));
            assert_eq!(code, 75, "{r:?}");
            assert_eq!(
                std::fs::read(p.db()).unwrap(),
                before,
                "the database changed"
            );
            let out = p.run(&["delete", &id]);
            assert_exit(&out, 64);
            assert!(p.backups().join(format!("{id}.duckdb")).exists());
        }
        let (r, code) = p.pre_run();
        if busy {
            assert_eq!(code, 75, "a live run's lease: {r:?}");
            assert_eq!(r.errors[0].code, ErrorCode::LockBusy);
            assert!(r.errors[0].message.contains("PID 1"), "{:?}", r.errors);
        } else {
            assert_eq!(code, 0, "a lease of pid {pid}, start {start}: {r:?}");
        }
    }
}
