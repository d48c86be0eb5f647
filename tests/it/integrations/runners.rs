//! The examples' simulation run by `just`, `make` and the Python orchestrator: one table of
//! callers (how each is started, what each says) through the same three scenarios (a run that
//! succeeds, a run that dies after committing and is rolled back, a run a writer keeps out).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{self, assert_exit, assert_ok, fingerprints, hold, sha256, Project};

use ducksafe::protocol::{Decision, ErrorCode};

use super::{command, python_with_duckdb, repo, rows, run, saved, state, text, tool, STATE_DIR};

/// How a caller is started on a project: the years to simulate, and a year to die in.
struct Run<'a> {
    years: &'a [&'a str],
    fail_in_year: Option<&'a str>,
}

/// Two simulated years that both succeed.
const SUCCEEDS: Run = Run {
    years: &["2025", "2026"],
    fail_in_year: None,
};

/// Two simulated years, the second of which fails.
const FAILS_IN_2026: Run = Run {
    years: &["2025", "2026"],
    fail_in_year: Some("2026"),
};

/// The state directory of make's `simulate` target: one folder per target.
fn make_state(p: &Project) -> PathBuf {
    state(p).join("simulate")
}

/// Success: exit 0, a verified backup equal to the database before the run, post_run `kept`,
/// and the run's changes in the database.
fn succeeds(p: &Project, st: &Path, out: &Output) {
    let before_rows = 1500; // Project::new's events
    assert_ok(out); // the run succeeds
    let pre = saved(st, "pre_run").expect("pre_run.json");
    assert_eq!(pre.decision, Decision::Proceed);
    let backup = pre.backup.expect("a backup");
    assert!(backup.verified);
    assert_eq!(
        backup.verification,
        [
            "size",
            "sha256",
            "block_checksums",
            "open",
            "row_counts",
            "fingerprints"
        ]
    );
    let in_backup = fingerprints(Path::new(&backup.path));
    assert_eq!(rows(&in_backup, "fct_yearly_events"), before_rows);
    let verify = p.run(&["verify", &backup.id]);
    assert!(verify.status.success(), "{}", text(&verify.stdout));

    let post = saved(st, "post_run").expect("post_run.json");
    assert_eq!(post.decision, Decision::Kept);
    let after = fingerprints(&p.db());
    assert!(
        rows(&after, "fct_yearly_events") > before_rows,
        "the run's events are in the database"
    );
    assert_ne!(after, in_backup, "the run changed the database");
    assert!(!p.path("simulation.duckdb.wal").exists());
    assert!(text(&out.stdout).contains("simulate: year 2026"));
}

/// A run that committed changes and died: non-zero exit, database equal to the pre-run backup,
/// its WAL (with the run's committed changes) in quarantine and none beside the database.
fn rolled_back(p: &Project, st: &Path, out: &Output, exit: i32) {
    assert_exit(out, exit); // the failed run's exit code
    assert!(
        text(&out.stdout).contains("dying without closing the database"),
        "the run died after committing"
    );
    let pre = saved(st, "pre_run").expect("pre_run.json");
    let backup = pre.backup.expect("a backup");
    let expected = fingerprints(Path::new(&backup.path));

    let post = saved(st, "post_run").expect("post_run.json");
    assert_eq!(post.decision, Decision::Restored, "{post:?}");
    let restore = post.restore.expect("restore details");
    assert_eq!(restore.backup_id, backup.id);
    support::assert_restored(p, &expected);
    let wal = restore
        .quarantined_files
        .iter()
        .map(PathBuf::from)
        .find(|f| f.file_name().is_some_and(|n| n == "simulation.duckdb.wal"))
        .expect("the WAL was quarantined");
    assert!(wal.exists() && fs::metadata(&wal).unwrap().len() > 0);
    let crashed = fingerprints(&Path::new(&restore.quarantine).join("simulation.duckdb"));
    assert!(
        rows(&crashed, "fct_yearly_events") > rows(&expected, "fct_yearly_events"),
        "the quarantined database and WAL hold the failed run's committed changes"
    );
}

/// A writer holds the database: the hook answers 75 / `database_locked` before anything runs.
fn blocked(p: &Project, st: &Path, out: &Output, exit: i32, before: &str) {
    assert_exit(out, exit);
    let pre = saved(st, "pre_run").expect("pre_run.json");
    assert_eq!(pre.decision, Decision::Abort);
    assert_eq!(pre.exit_code, 75);
    assert_eq!(pre.errors[0].code, ErrorCode::DatabaseLocked);
    assert!(pre.errors[0].retryable);
    assert!(
        saved(st, "post_run").is_none(),
        "no post_run: the run never started"
    );
    assert!(
        !text(&out.stdout).contains("simulate:"),
        "the workload never started"
    );
    assert!(p.backup_files().is_empty(), "no backup was published");
    assert_eq!(sha256(&p.db()), before);
}

fn locked_run(p: &Project, start: impl FnOnce() -> Output) -> (Output, String) {
    let before = sha256(&p.db());
    let holder = hold(&p.db());
    let out = start();
    drop(holder);
    (out, before)
}

/// A caller of the examples' simulation, and what it shows in each scenario beyond what every
/// caller must (the checks in [`succeeds`], [`rolled_back`] and [`blocked`]).
struct Runner {
    /// The program that runs the simulation (`None`: the Python with duckdb runs the
    /// orchestrator itself).
    program: Option<&'static str>,
    /// The command for a run of `r` on `p`; `restore`: the caller asks for a restore on failure.
    invoke: fn(program: &Path, python: &Path, p: &Project, r: &Run, restore: bool) -> Command,
    /// Where the caller leaves pre_run.json and post_run.json.
    state: fn(&Project) -> PathBuf,
    /// Two years that both succeed.
    succeeded: Shows,
    /// A run that dies in a year after committing, rolled back.
    failed: Failed,
    /// A writer holds the database (the caller asks for a restore on failure): its exit code.
    blocked_exit: i32,
    blocked: Shows,
}

/// A failed run as a caller sees it.
struct Failed {
    run: Run<'static>,
    /// Who asks for the restore: the caller, or (`RESTORE_ON_FAILURE: true`) the configuration.
    restore_asked_by_the_caller: bool,
    exit: i32,
    shows: Shows,
}

/// What a caller prints, each with what it proves.
struct Shows {
    stdout: &'static [(&'static str, &'static str)],
    stdout_never: &'static [(&'static str, &'static str)],
    stderr: &'static [(&'static str, &'static str)],
}

impl Shows {
    fn check(&self, out: &Output) {
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        for (needle, why) in self.stdout {
            assert!(stdout.contains(needle), "{why}: no `{needle}` in {stdout}");
        }
        for (needle, why) in self.stdout_never {
            assert!(!stdout.contains(needle), "{why}: `{needle}` in {stdout}");
        }
        for (needle, why) in self.stderr {
            assert!(stderr.contains(needle), "{why}: no `{needle}` in {stderr}");
        }
    }
}

const NOTHING: Shows = Shows {
    stdout: &[],
    stdout_never: &[],
    stderr: &[],
};

/// `just simulate YEARS…` with examples/justfile; the failure and restore come through the
/// environment.
const JUST: Runner = Runner {
    program: Some("just"),
    invoke: |just, python, p, r, restore| {
        let mut c = command(just, p.dir.path());
        c.arg("--justfile")
            .arg(repo().join("examples/justfile"))
            .arg("--working-directory")
            .arg(p.dir.path())
            .arg("simulate")
            .args(r.years)
            .env("PYTHON", python);
        if let Some(y) = r.fail_in_year {
            c.env("FAIL_IN_YEAR", y);
        }
        if restore {
            c.env("DUCKSAFE_ON_FAILURE", "restore");
        }
        c
    },
    state,
    succeeded: NOTHING,
    // just exits with the recipe's exit code: the workload's own.
    failed: Failed {
        run: FAILS_IN_2026,
        restore_asked_by_the_caller: true,
        exit: 1,
        shows: Shows {
            stderr: &[("recipe `simulate` failed", "just names the failed recipe")],
            ..NOTHING
        },
    },
    // The wrapper exits with the hook's code and just passes it on.
    blocked_exit: 75,
    blocked: NOTHING,
};

/// `make simulate YEARS=…` with examples/Makefile; the failure and restore come as variables.
const MAKE: Runner = Runner {
    program: Some("make"),
    invoke: |make, python, p, r, restore| {
        let mut c = command(make, p.dir.path());
        c.arg("--no-print-directory")
            .arg("-f")
            .arg(repo().join("examples/Makefile"))
            .arg("-C")
            .arg(p.dir.path())
            .arg("simulate")
            .arg(format!("YEARS={}", r.years.join(" ")))
            .arg(format!("PYTHON={}", python.display()));
        if let Some(y) = r.fail_in_year {
            c.arg(format!("FAIL_IN_YEAR={y}"));
        }
        if restore {
            c.arg("DUCKSAFE_ON_FAILURE=restore");
        }
        c
    },
    // One folder per target.
    state: make_state,
    succeeded: NOTHING,
    // make turns every failed recipe into its own exit 2 and names the recipe's code. Restore
    // asked by the configuration this time, not by the caller.
    failed: Failed {
        run: FAILS_IN_2026,
        restore_asked_by_the_caller: false,
        exit: 2,
        shows: Shows {
            stderr: &[("Error 1", "the workload's code")],
            ..NOTHING
        },
    },
    blocked_exit: 2,
    blocked: Shows {
        stderr: &[("Error 75", "the hook's code, through make")],
        ..NOTHING
    },
};

/// `python examples/orchestrator/run_simulation.py --years …`, which calls the hook through the
/// `ducksafe` package (the checkout's, on PYTHONPATH; `wheel` runs it with the installed
/// wheel); the failure and restore come as options.
const ORCHESTRATOR: Runner = Runner {
    program: None,
    invoke: |python, _, p, r, restore| {
        let mut c = command(python, p.dir.path());
        c.current_dir(p.dir.path())
            .env("PYTHONPATH", repo().join("hooks/python"))
            .arg(repo().join("examples/orchestrator/run_simulation.py"))
            .args([
                "--config",
                "config.yaml",
                "--state-dir",
                STATE_DIR,
                "--years",
            ])
            .args(r.years);
        if let Some(y) = r.fail_in_year {
            c.args(["--fail-in-year", y]);
        }
        if restore {
            c.args(["--on-failure", "restore"]);
        }
        c
    },
    state,
    succeeded: Shows {
        stdout: &[(
            "simulation complete for 2 year(s)",
            "the orchestrator's end",
        )],
        ..NOTHING
    },
    failed: Failed {
        run: Run {
            years: &["2025", "2026", "2027"],
            fail_in_year: Some("2026"),
        },
        restore_asked_by_the_caller: true,
        exit: 1,
        shows: Shows {
            stdout: &[("year 2026 failed with exit code 1", "the failed year")],
            stdout_never: &[("year 2027", "the run stops at the failed year")],
            ..NOTHING
        },
    },
    blocked_exit: 75,
    blocked: Shows {
        stderr: &[(
            "busy (database_locked)",
            "DucksafeBusy was raised and caught",
        )],
        ..NOTHING
    },
};

/// The caller's program and the Python with duckdb, or (said why) `None`.
fn programs(r: &Runner) -> Option<(PathBuf, PathBuf)> {
    let program = match r.program {
        Some(name) => Some(tool(name)?),
        None => None,
    };
    let python = python_with_duckdb()?;
    Some((program.unwrap_or_else(|| python.clone()), python))
}

/// Two years that both succeed: a verified backup, and the run's changes kept.
fn success_scenario(r: &Runner) {
    let (program, python) = need!(programs(r));
    let p = Project::new("");
    let out = run(&mut (r.invoke)(&program, &python, &p, &SUCCEEDS, false));
    succeeds(&p, &(r.state)(&p), &out);
    r.succeeded.check(&out);
}

/// A run that dies after committing: rolled back, its WAL in quarantine, the failure's exit.
fn failure_scenario(r: &Runner) {
    let (program, python) = need!(programs(r));
    let f = &r.failed;
    let p = Project::new(if f.restore_asked_by_the_caller {
        ""
    } else {
        "RESTORE_ON_FAILURE: true\n"
    });
    let restore = f.restore_asked_by_the_caller;
    let out = run(&mut (r.invoke)(&program, &python, &p, &f.run, restore));
    rolled_back(&p, &(r.state)(&p), &out, f.exit);
    f.shows.check(&out);
}

/// A writer holds the database: the run never starts, and nothing is written.
fn blocked_scenario(r: &Runner) {
    let (program, python) = need!(programs(r));
    let p = Project::new("");
    let (out, before) = locked_run(&p, || {
        run(&mut (r.invoke)(&program, &python, &p, &SUCCEEDS, true))
    });
    blocked(&p, &(r.state)(&p), &out, r.blocked_exit, &before);
    r.blocked.check(&out);
}

#[test]
fn just_success_leaves_a_verified_backup_and_the_runs_changes() {
    success_scenario(&JUST);
}

#[test]
fn just_failed_run_is_rolled_back_and_its_wal_quarantined() {
    failure_scenario(&JUST);
}

#[test]
fn just_is_stopped_before_the_run_while_a_writer_holds_the_database() {
    blocked_scenario(&JUST);
}

#[test]
fn make_success_leaves_a_verified_backup_and_the_runs_changes() {
    success_scenario(&MAKE);
}

#[test]
fn make_failed_run_is_rolled_back_and_its_wal_quarantined() {
    failure_scenario(&MAKE);
}

#[test]
fn make_is_stopped_before_the_run_while_a_writer_holds_the_database() {
    blocked_scenario(&MAKE);
}

#[test]
fn orchestrator_success_leaves_a_verified_backup_and_the_runs_changes() {
    success_scenario(&ORCHESTRATOR);
}

#[test]
fn orchestrator_failed_year_is_rolled_back_and_its_wal_quarantined() {
    failure_scenario(&ORCHESTRATOR);
}

#[test]
fn orchestrator_is_stopped_before_the_run_while_a_writer_holds_the_database() {
    blocked_scenario(&ORCHESTRATOR);
}

/// Two guarded targets at once under `make -j2`, each waiting for the other to have started:
/// each target's folder holds its own pre_run and post_run.
#[test]
fn make_j2_keeps_each_targets_responses_apart() {
    let make = need!(tool("make"));
    let p = Project::new("");
    fs::copy(p.db(), p.path("other.duckdb")).unwrap();
    fs::write(
        p.path("other.yaml"),
        "DB_PATH: other.duckdb\nBACKUP_DIR: other-backups\nLOG_LEVEL: INFO\nBACKUP_MIN_FREE_BYTES: 0\n",
    )
    .unwrap();
    // Each recipe marks its start, then waits (bounded) for the other's mark: both commands
    // are running at the same time, or the recipe fails with 99.
    let makefile = format!(
        "include {}\n\
         first: DUCKSAFE_CONFIG = config.yaml\n\
         second: DUCKSAFE_CONFIG = other.yaml\n\
         second: DUCKSAFE_ON_FAILURE = restore\n\
         first: ; $(DUCKSAFE_GUARD) sh -c 'touch first.started; n=0; while [ ! -e second.started ] && [ $$n -lt 3000 ]; do sleep 0.1; n=$$((n+1)); done; [ -e second.started ] || exit 99'\n\
         second: ; $(DUCKSAFE_GUARD) sh -c 'touch second.started; n=0; while [ ! -e first.started ] && [ $$n -lt 3000 ]; do sleep 0.1; n=$$((n+1)); done; [ -e first.started ] || exit 99; exit 3'\n",
        repo().join("hooks/ducksafe.mk").display()
    );
    fs::write(p.path("Makefile"), makefile).unwrap();
    let out = run(command(&make, p.dir.path())
        .current_dir(p.dir.path())
        .args(["--no-print-directory", "-j2", "-k", "first", "second"]));
    assert_exit(&out, 2); // `second` failed
    for (target, db, decision, code) in [
        ("first", "simulation.duckdb", Decision::Kept, 0),
        ("second", "other.duckdb", Decision::Restored, 3),
    ] {
        let st = state(&p).join(target);
        let pre = saved(&st, "pre_run").unwrap_or_else(|| panic!("{target}: pre_run.json"));
        let post = saved(&st, "post_run").unwrap_or_else(|| panic!("{target}: post_run.json"));
        assert_eq!(pre.request_id, post.request_id, "{target}: one run");
        assert_eq!(pre.paths["db_path"], p.path(db).display().to_string());
        assert_eq!(post.paths["db_path"], p.path(db).display().to_string());
        assert_eq!(post.decision, decision, "{target}");
        assert_eq!(post.run.unwrap().exit_code, Some(code), "{target}");
    }
    assert!(!state(&p).join("pre_run.json").exists());
}
