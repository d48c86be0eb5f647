//! `hooks/ducksafe-run`: interrupted runs, odd commands and exit codes, and guarded runs of one
//! database taking turns.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{self, assert_exit, assert_ok, fingerprints, hold, Project};

use ducksafe::protocol::{Decision, Outcome, Response};

use super::{
    command, is_running, job_command, python_with_duckdb, repo, run, saved, saved_response,
    send_signal, signal_number, state, text, tool, Job, STATE_DIR,
};

/// A workload that commits a change (left in the WAL), writes its PID to a marker file and
/// waits, as a long simulation year does.
const HOLD_PY: &str = r#"import os, sys, time
import duckdb
db, marker = sys.argv[1], sys.argv[2]
con = duckdb.connect(db)
con.execute("PRAGMA disable_checkpoint_on_shutdown")
con.execute("SET checkpoint_threshold = '10GB'")
con.execute("UPDATE employees SET current_compensation = current_compensation * 2")
with open(marker + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(marker + ".tmp", marker)
for _ in range(3000):  # the safety bound; the test signals long before
    time.sleep(0.1)
print("hold: never interrupted")
"#;

/// ducksafe-run started in its own session, the whole group signalled once the workload has
/// committed: the run is a failed run, restored as asked, and the wrapper ends by the signal.
fn ducksafe_run_interrupted_by(sig: &str) {
    let python = need!(python_with_duckdb());
    let p = Project::new("");
    fs::write(p.path("hold.py"), HOLD_PY).unwrap();
    let mut c = need!(job_command(
        &repo().join("hooks/ducksafe-run"),
        p.dir.path(),
        true
    ));
    c.args(["--config", "config.yaml", "--on-failure", "restore"])
        .args(["--state-dir", STATE_DIR, "--"])
        .arg(&python)
        .args(["hold.py", "simulation.duckdb", "started"]);
    let mut job = Job::start(&mut c, p.dir.path());
    let workload = job.wait_for(&p.path("started"));
    job.assert_session_leader();
    send_signal(sig, &format!("-{}", job.pid()));
    let out = job.finish();

    let n = signal_number(sig);
    if sig == "QUIT" {
        assert_exit(&out, 131); // 128 + SIGQUIT, no core dump
    } else {
        assert_eq!(out.status.signal(), Some(n), "ended by the same signal");
    }
    assert!(!is_running(workload));
    assert!(text(&out.stderr).contains(&format!("interrupted by SIG{sig}")));
    let pre = saved(&state(&p), "pre_run").expect("pre_run.json");
    let expected = fingerprints(Path::new(&pre.backup.expect("a backup").path));
    let post = saved(&state(&p), "post_run").expect("post_run.json");
    assert_eq!(post.decision, Decision::Restored, "{post:?}");
    let run = post.run.expect("the run, repeated");
    assert_eq!(run.outcome, Outcome::Failure);
    assert_eq!(
        run.exit_code,
        Some(128 + n),
        "the workload died of the signal"
    );
    support::assert_restored(&p, &expected);
}

#[test]
fn ducksafe_run_restores_a_run_interrupted_by_ctrl_c() {
    ducksafe_run_interrupted_by("INT");
}

#[test]
fn ducksafe_run_restores_a_run_whose_terminal_hung_up() {
    ducksafe_run_interrupted_by("HUP");
}

#[test]
fn ducksafe_run_restores_a_run_interrupted_by_sigterm() {
    ducksafe_run_interrupted_by("TERM");
}

#[test]
fn ducksafe_run_restores_a_run_interrupted_by_sigquit() {
    ducksafe_run_interrupted_by("QUIT");
}

/// A Ctrl-C while post_run restores: ducksafe waits at `restore.staged` (the failpoint writes
/// its PID to `go.reached`) while the whole group of the wrapper, started in its own session, gets
/// SIGINT. The restore is not cut short (ducksafe ignores the signal) and runs to its end once
/// let go, and only then the wrapper ends as interrupted, by SIGINT (a shell reports 130), and
/// says so, instead of exiting with the command's own 1 as if nothing had happened.
#[test]
fn ducksafe_run_reports_a_ctrl_c_during_post_run_once_the_restore_is_done() {
    let python = need!(python_with_duckdb());
    let p = Project::new("");
    let go = p.path("go");
    let mut c = need!(job_command(
        &repo().join("hooks/ducksafe-run"),
        p.dir.path(),
        true
    ));
    c.env(
        "DUCKSAFE_FAILPOINT",
        format!("restore.staged:wait={}", go.display()),
    )
    .args(["--config", "config.yaml", "--on-failure", "restore"])
    .args(["--state-dir", STATE_DIR, "--"])
    .arg(&python)
    .args([
        "-c",
        "import duckdb, sys\n\
         con = duckdb.connect('simulation.duckdb')\n\
         con.execute('CREATE TABLE the_run AS SELECT 1 AS x')\n\
         con.close()\n\
         sys.exit(1)\n",
    ]);
    let job = Job::start(&mut c, p.dir.path());
    let _let_go = LetGoFile(go.clone());
    let reached = p.path("go.reached");
    let deadline = Instant::now() + Duration::from_secs(300);
    let ducksafe = loop {
        // The failpoint creates the file, then writes its PID: read until the PID is there.
        if let Some(pid) = fs::read_to_string(&reached)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "post_run never reached `restore.staged`\n{}",
            job.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    job.assert_session_leader();
    send_signal("INT", &format!("-{}", job.pid()));
    assert!(
        is_running(ducksafe),
        "the restoring ducksafe died of the Ctrl-C"
    );
    fs::write(&go, b"").unwrap();
    let out = job.finish();

    assert_eq!(
        out.status.signal(),
        Some(signal_number("INT")),
        "ended as interrupted, by SIGINT"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("interrupted by SIGINT during post_run, which ran to its end (`restored`)"),
        "{stderr}"
    );
    let pre = saved(&state(&p), "pre_run").expect("pre_run.json");
    let expected = fingerprints(Path::new(&pre.backup.expect("a backup").path));
    let post = saved(&state(&p), "post_run").expect("post_run.json");
    assert_eq!(post.decision, Decision::Restored, "{post:?}");
    let run = post.run.expect("the run, repeated");
    assert_eq!(
        (run.outcome, run.exit_code),
        (Outcome::Failure, Some(1)),
        "the run itself ended before the Ctrl-C: its own failure"
    );
    support::assert_restored(&p, &expected);
}

/// Creates a go-file however the test ends, so that a failing test leaves no ducksafe waiting
/// at its failpoint.
struct LetGoFile(std::path::PathBuf);

impl Drop for LetGoFile {
    fn drop(&mut self) {
        let _ = fs::write(&self.0, b"");
    }
}

/// A SIGTERM sent to `just` alone (a supervisor's `kill PID`): just passes it on to its child
/// alone. With dash as the recipe's shell that child is the line's shell, which dies of it, and
/// just exits: the guard's wrapper notices that its parent is gone. With bash the shell exec'd
/// the wrapper, which gets the SIGTERM itself and passes it on. Either way the workload is
/// stopped and the run judged as interrupted: restored, as asked, instead of running on.
#[test]
fn just_guard_restores_a_run_when_just_alone_gets_sigterm() {
    just_alone_gets_sigterm("");
}

#[test]
fn just_guard_restores_a_run_when_just_alone_gets_sigterm_under_bash() {
    just_alone_gets_sigterm("set shell := [\"bash\", \"-cu\"]\n");
}

fn just_alone_gets_sigterm(settings: &str) {
    let just = need!(tool("just"));
    let python = need!(python_with_duckdb());
    let p = Project::new("");
    fs::write(p.path("hold.py"), HOLD_PY).unwrap();
    let import = repo().join("hooks/ducksafe.just");
    fs::write(
        p.path("justfile"),
        format!(
            "{settings}import {:?}\nsim:\n    {{{{ducksafe_guard}}}} {:?} hold.py simulation.duckdb started\n",
            import.display().to_string(),
            python.display().to_string()
        ),
    )
    .unwrap();
    let mut c = need!(job_command(&just, p.dir.path(), true));
    c.arg("sim").env("DUCKSAFE_ON_FAILURE", "restore");
    let mut job = Job::start(&mut c, p.dir.path());
    let workload = job.wait_for(&p.path("started"));
    send_signal("TERM", &job.pid().to_string()); // just alone, not its group
    let out = job.finish();
    assert!(!out.status.success(), "just reports the interrupted recipe");

    // Under dash just does not wait for the wrapper (its own child, the line's shell, died at
    // once): wait for the wrapper's answer. The bound only keeps a broken wrapper from hanging the suite.
    let post_run = state(&p).join("post_run.json");
    let answered = || {
        fs::read_to_string(&post_run).is_ok_and(|s| serde_json::from_str::<Response>(&s).is_ok())
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !answered() || is_running(workload) {
        assert!(
            Instant::now() < deadline,
            "the workload ran on unjudged after just was stopped\n{}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pre = saved(&state(&p), "pre_run").expect("pre_run.json");
    let expected = fingerprints(Path::new(&pre.backup.expect("a backup").path));
    let post = saved(&state(&p), "post_run").expect("post_run.json");
    assert_eq!(post.decision, Decision::Restored, "{post:?}");
    let run = post.run.expect("the run, repeated");
    assert_eq!(run.outcome, Outcome::Failure);
    assert_eq!(
        run.exit_code,
        Some(143),
        "the workload was stopped by SIGTERM"
    );
    support::assert_restored(&p, &expected);
}

#[test]
fn ducksafe_run_prints_backslashes_as_they_are() {
    let p = Project::new("");
    let out = run(command(&repo().join("hooks/ducksafe-run"), p.dir.path())
        .current_dir(p.dir.path())
        .args(["--config", "config.yaml", "--request-id", r"job\new", "--"])
        .args(["printf", r"%s\n", r"C:\cache\x"]));
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "C:\\cache\\x\n", "the command's output");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(r"running: printf %s\n C:\cache\x"),
        "{stderr}"
    );
    for (name, decision) in [("pre_run", Decision::Proceed), ("post_run", Decision::Kept)] {
        let prefix = format!("ducksafe-run: {name}: ");
        let line = stderr
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name} line"));
        let r: Response = serde_json::from_str(line).unwrap();
        assert_eq!(r.request_id, r"job\new");
        assert_eq!(r.decision, decision);
    }
}

/// A shell builtin as the command (`exec`, `exit`) cannot replace or end the wrapper: the
/// command runs as a program of its own, so post_run still runs and restores; a name the
/// wrapper uses for a function of its own (`keep`) is still looked up as a program. Programs of
/// those three names (each runs its arguments) are first on PATH, and the command is `NAME
/// work.sh`: each time the work itself ran (its change, its exit code 3) and post_run restored.
/// (Without the programs, `env` finds none of that name: exit 127, the work never runs, and the
/// restore would have nothing to prove.)
#[test]
fn ducksafe_run_keeps_its_promise_when_the_command_starts_with_a_builtin() {
    let python = need!(python_with_duckdb());
    let p = Project::new("RESTORE_ON_FAILURE: true\n");
    let before = fingerprints(&p.db());
    let script = p.path("work.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n{} -c \"import duckdb; c=duckdb.connect('simulation.duckdb'); c.execute('CREATE TABLE the_run AS SELECT 1 AS x'); c.close()\" || exit 9\nexit 3\n",
            python.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let bin = p.path("bin");
    fs::create_dir(&bin).unwrap();
    for name in ["exec", "exit", "keep"] {
        fs::write(bin.join(name), "#!/bin/sh\nexec \"$@\"\n").unwrap();
        fs::set_permissions(bin.join(name), fs::Permissions::from_mode(0o755)).unwrap();
    }
    for name in ["exec", "exit", "keep"] {
        let mut c = command(&repo().join("hooks/ducksafe-run"), p.dir.path());
        c.current_dir(p.dir.path())
            .args(["--config", "config.yaml", "--state-dir", name, "--", name])
            .arg(&script);
        let path = c
            .get_envs()
            .find(|(k, _)| *k == "PATH")
            .and_then(|(_, v)| v.map(std::ffi::OsStr::to_owned))
            .unwrap();
        let path = std::iter::once(bin.clone()).chain(std::env::split_paths(&path));
        c.env("PATH", std::env::join_paths(path).unwrap());
        let out = run(&mut c);
        let post = saved(&p.path(name), "post_run")
            .unwrap_or_else(|| panic!("{name}: post_run never ran: {}", text(&out.stderr)));
        assert_eq!(
            post.run.and_then(|r| r.exit_code),
            Some(3),
            "{name}: not the work's own exit"
        );
        assert_eq!(post.decision, Decision::Restored, "{name}");
        assert_eq!(
            fingerprints(&p.db()),
            before,
            "{name}: the run was not restored"
        );
    }
}

/// A child that waits for a go-file: let go and reaped however the test ends, so that a
/// failing test leaves no process waiting.
struct LetGo(std::process::Child, std::path::PathBuf);

impl Drop for LetGo {
    fn drop(&mut self) {
        let _ = fs::write(&self.1, b"");
        let _ = self.0.wait();
    }
}

/// Guarded runs of one database take turns: while one runs (between its pre_run and its
/// post_run), another guarded run is refused as busy (75) and its command never starts, so the
/// first run's restore can never erase the second's work, and rotation keeps the first run's
/// backup however many backups come meanwhile. A run whose wrapper is gone no longer counts.
#[test]
fn guarded_runs_of_one_database_take_turns() {
    let p = Project::new("RESTORE_ON_FAILURE: true\nBACKUP_KEEP_LAST: 1\n");
    let before = fingerprints(&p.db());
    let wrapper = repo().join("hooks/ducksafe-run");
    let marker = p.path("first.started");
    let go = p.path("first.go");
    // The first run: changes nothing itself, waits for the test, then fails.
    let first = command(&wrapper, p.dir.path())
        .current_dir(p.dir.path())
        .args([
            "--config",
            "config.yaml",
            "--state-dir",
            "first",
            "--",
            "sh",
            "-c",
        ])
        .arg(format!(
            "touch {m}; while [ ! -e {g} ]; do sleep 0.05; done; exit 1",
            m = marker.display(),
            g = go.display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = LetGo(first, go.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first run never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let first_backup = saved_response(&p.path("first/pre_run.json"))
        .backup
        .unwrap()
        .id;
    // The second run, meanwhile: busy, its command not started.
    let second_marker = p.path("second.ran");
    let second = || {
        run(command(&wrapper, p.dir.path())
            .current_dir(p.dir.path())
            .args([
                "--config",
                "config.yaml",
                "--state-dir",
                "second",
                "--",
                "touch",
            ])
            .arg(&second_marker))
    };
    let out = second();
    assert_exit(&out, 75);
    assert!(
        !second_marker.exists(),
        "the second command ran during the first run"
    );
    // An operator's backup meanwhile rotates (BACKUP_KEEP_LAST: 1) but keeps the run's backup.
    let out = p.run(&["backup"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(p.backups().join(format!("{first_backup}.duckdb")).exists());
    // The first run fails: restored from its own backup.
    fs::write(&go, b"").unwrap();
    assert_eq!(first.0.wait().unwrap().code(), Some(1));
    assert_eq!(
        saved_response(&p.path("first/post_run.json")).decision,
        Decision::Restored
    );
    assert_eq!(fingerprints(&p.db()), before);
    // Its turn is over: the next guarded run starts.
    let out = second();
    assert_ok(&out);
    assert!(second_marker.exists());
}

/// 75 from the command and 75 from the hook: the state directory tells them apart.
#[test]
fn ducksafe_run_tells_the_commands_exit_code_from_the_hooks() {
    let p = Project::new("");
    let wrapper = repo().join("hooks/ducksafe-run");
    let guarded = |cmd: &str| {
        run(command(&wrapper, p.dir.path())
            .current_dir(p.dir.path())
            .args(["--config", "config.yaml", "--state-dir", STATE_DIR, "--"])
            .args(["sh", "-c", cmd]))
    };
    let out = guarded("exit 75");
    assert_exit(&out, 75);
    assert_eq!(
        saved(&state(&p), "pre_run").unwrap().decision,
        Decision::Proceed
    );
    let post = saved(&state(&p), "post_run").expect("the command ran: post_run.json");
    let run = post.run.expect("the run, repeated");
    assert_eq!((run.outcome, run.exit_code), (Outcome::Failure, Some(75)));

    let holder = hold(&p.db());
    let out = guarded("exit 0");
    drop(holder);
    assert_exit(&out, 75);
    let pre = saved(&state(&p), "pre_run").unwrap();
    assert_eq!(pre.decision, Decision::Abort);
    assert!(pre.errors[0].retryable);
    assert!(
        saved(&state(&p), "post_run").is_none(),
        "the hook refused: no post_run.json"
    );
}
