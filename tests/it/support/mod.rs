//! Shared test support: a temporary project with a real DuckDB database and a config, the real
//! binary, a second process that holds the database open, the one way to skip a case, and
//! mounts made for a test (`mount`).
//! `cases` and `runs` are the reliability suite's harness (counted cases, kills at failpoints).

pub mod cases;
pub mod mount;
pub mod runs;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use ducksafe::duck::{Db, Fingerprint, Limits};
use ducksafe::protocol::Response;

/// True when this is CI's run: `.ci/run` exports `CI=true`. There, a case that cannot run on
/// this machine fails instead of skipping. The one place the suite reads `CI`.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// Skips the case `case` because `why`: a failure under CI; elsewhere a line on the process's
/// stderr (libtest hides a passing test's `eprintln!`) and one in `$DUCKSAFE_SKIP_LOG`, which
/// `.ci/run` counts on its closing line. A skipped case must return right after this.
pub fn skip(case: &str, why: &str) {
    assert!(!in_ci(), "CI must run `{case}`, but {why}");
    let line = format!("SKIPPED: {case}: {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(log) = std::env::var_os("DUCKSAFE_SKIP_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// A command whose child inherits no file descriptor of this process but its stdio. Every child
/// the tests start goes through here: DuckDB opens database files without `O_CLOEXEC`, and in
/// this one test binary a child started by one test would otherwise keep open, for its whole
/// life, a database another test had open in-process at that moment (its mount could then not
/// be unmounted, a deleted file's space not be freed).
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(program);
    // SAFETY: the closure runs in the child between fork and exec, after its stdio is set up,
    // and makes one system call (close_range(2) marking fds from 3 on close-on-exec), which is
    // async-signal-safe; std's own exec-error pipe is close-on-exec already.
    #[allow(unsafe_code)]
    unsafe {
        c.pre_exec(|| {
            if libc::close_range(
                3,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC.cast_signed(),
            ) == 0
            {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    c
}

/// A database another test has open in-process (DuckDB: no `O_CLOEXEC`) is not open in a child
/// started through [`command`].
#[test]
fn children_inherit_no_open_database() {
    let p = Project::new("");
    let d = Db::open_read_only(&p.db(), &Limits::default()).unwrap();
    let out = command("ls")
        .args(["-l", "/proc/self/fd/"])
        .output()
        .unwrap();
    d.close().unwrap();
    assert_ok(&out);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("/proc/") && !listed.contains("simulation.duckdb"),
        "{listed}"
    );
}

pub fn bin() -> Command {
    let mut c = command(env!("CARGO_BIN_EXE_ducksafe"));
    c.env_remove("DUCKSAFE_CONFIG")
        .env_remove("DUCKSAFE_FAILPOINT")
        .env_remove("DUCKSAFE_NOW")
        .env_remove("DUCKSAFE_DB_PATH");
    c
}

/// A project folder: `simulation.duckdb`, `config.yaml`, `backups/`.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    /// A small demo-shaped database (fast to create) and a config with `extra` lines appended.
    pub fn new(extra: &str) -> Project {
        Project::new_in(&std::env::temp_dir(), extra)
    }

    /// Like [`Project::new`], in a temporary folder under `parent` (a filesystem of its own).
    pub fn new_in(parent: &Path, extra: &str) -> Project {
        let dir = tempfile::tempdir_in(parent).unwrap();
        ducksafe::demo::create_sized(&dir.path().join("simulation.duckdb"), 300, 1500).unwrap();
        let p = Project { dir };
        p.write_config(&format!(
            "DB_PATH: simulation.duckdb\nLOG_LEVEL: INFO\nBACKUP_MIN_FREE_BYTES: 0\n{extra}"
        ));
        p
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.path("config.yaml"), text).unwrap();
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn db(&self) -> PathBuf {
        self.path("simulation.duckdb")
    }
    pub fn config(&self) -> PathBuf {
        self.path("config.yaml")
    }
    pub fn backups(&self) -> PathBuf {
        self.path("backups")
    }

    /// Runs `ducksafe --config config.yaml ARGS` in the project folder.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = bin();
        c.current_dir(self.dir.path())
            .arg("--config")
            .arg(self.config())
            .args(args);
        c
    }

    /// Sends one request to `ducksafe hook` and parses the single JSON line it answers.
    pub fn hook(&self, request: &str) -> (Response, i32) {
        self.hook_env(request, &[])
    }

    pub fn hook_env(&self, request: &str, env: &[(&str, &str)]) -> (Response, i32) {
        let mut c = bin();
        c.current_dir(self.dir.path()).arg("hook");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = pipe(c, request.as_bytes());
        (one_response(&out), out.status.code().unwrap_or(-1))
    }

    /// A pre_run request for the project's configuration, answered.
    pub fn pre_run(&self) -> (Response, i32) {
        self.pre_run_env(&[])
    }

    /// [`Project::pre_run`] with `env` set for the hook (`DUCKSAFE_NOW`, a failpoint).
    pub fn pre_run_env(&self, env: &[(&str, &str)]) -> (Response, i32) {
        self.hook_env(&request("pre_run", &self.config(), ""), env)
    }

    /// Backup files (`*.duckdb`, not `latest`) in the backup directory, sorted.
    pub fn backup_files(&self) -> Vec<String> {
        dir_names(&self.backups())
            .into_iter()
            .filter(|n| n.ends_with(".duckdb") && n != "latest.duckdb" && !n.starts_with('.'))
            .collect()
    }

    /// Every entry in the backup directory.
    pub fn backup_dir_entries(&self) -> Vec<String> {
        dir_names(&self.backups())
    }
}

/// A JSON string literal for a path.
pub fn jstr(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).unwrap()
}

/// A hook request for `event` with the configuration file `config` and extra fields.
pub fn request(event: &str, config: &Path, extra: &str) -> String {
    format!(
        r#"{{"protocol_version":1,"event":"{event}","config":{{"path":{}}}{extra}}}"#,
        jstr(config)
    )
}

/// The names in a directory, sorted (empty when it does not exist).
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs a command with `input` on stdin and collects its output.
pub fn pipe(mut c: Command, input: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input);
    }
    child.wait_with_output().unwrap()
}

/// Runs `c` with a stdout whose reader has already gone (`ducksafe … | head -c0`): the read end
/// is closed before the process starts, so every write fails, whatever the timing.
pub fn with_closed_stdout(mut c: Command) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    c.stdout(writer).output().unwrap()
}

/// A command's stderr, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that a command exited with `code`, showing its stderr and stdout when it did not;
/// returns its stderr.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32) -> String {
    let said = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "the exit status; stderr: {said}\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    said
}

/// Asserts that a command succeeded ([`assert_exit`] with 0); returns its stderr.
#[track_caller]
pub fn assert_ok(out: &Output) -> String {
    assert_exit(out, 0)
}

/// Runs `c` with `DUCKSAFE_FAILPOINT=<point>` and asserts that it died there: of SIGABRT, its
/// last words naming the failpoint. Without this a failpoint moved or renamed in the code would
/// turn the case into an ordinary run that the aftermath checks might still accept.
#[track_caller]
pub fn abort_at(mut c: Command, point: &str) -> Output {
    let out = c.env("DUCKSAFE_FAILPOINT", point).output().unwrap();
    assert_aborted_at(&out, point);
    out
}

/// Asserts that a run died at the failpoint `point` (see [`abort_at`]).
#[track_caller]
pub fn assert_aborted_at(out: &Output, point: &str) {
    use std::os::unix::process::ExitStatusExt;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(6),
        "not aborted at `{point}` (exit {:?}): {stderr}",
        out.status.code()
    );
    assert!(
        stderr.contains(&format!("failpoint `{point}`: aborting")),
        "the abort was not at `{point}`: {stderr}"
    );
}

/// Asserts that stdout is exactly one JSON line and parses it as a protocol response.
pub fn one_response(out: &Output) -> Response {
    let stdout = String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line on stdout, got {stdout:?}; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Response = serde_json::from_str(lines[0]).expect("the line parses as a Response");
    assert_eq!(
        Some(r.exit_code),
        out.status.code(),
        "exit_code repeats the exit status"
    );
    r
}

/// Every table's fingerprint, by name.
pub fn fingerprints(db: &Path) -> Vec<(String, Fingerprint)> {
    let d = Db::open_read_only(db, &Limits::default()).unwrap();
    let v = d
        .tables()
        .unwrap()
        .iter()
        .map(|t| (t.display(), d.fingerprint(t).unwrap()))
        .collect();
    d.close().unwrap();
    v
}

/// The project's database holds exactly `expected` (a backup's fingerprints) and has no WAL
/// beside it: what a restore must leave.
pub fn assert_restored(p: &Project, expected: &[(String, Fingerprint)]) {
    assert_eq!(
        fingerprints(&p.db()),
        expected,
        "the database equals its pre-run backup"
    );
    assert!(
        !p.path("simulation.duckdb.wal").exists(),
        "no WAL beside the restored database"
    );
}

/// Commits rows that stay only in the WAL: checkpoints are disabled, so closing leaves
/// `<db>.wal` behind, as a crashed or interrupted writer would.
pub fn write_into_wal(db: &Path, sql: &str) {
    let d = Db::open_read_write(db, &Limits::default()).unwrap();
    d.execute_batch("PRAGMA disable_checkpoint_on_shutdown; SET checkpoint_threshold = '10GB';")
        .unwrap();
    d.execute_batch(sql).unwrap();
    d.close().unwrap();
    let wal = PathBuf::from(format!("{}.wal", db.display()));
    assert!(
        wal.exists(),
        "the test needs committed data left in {}",
        wal.display()
    );
}

pub fn sha256(path: &Path) -> String {
    ducksafe::files::hex(&ducksafe::files::hash_file(path).unwrap().sha256)
}

/// A second process (this test binary, re-executed) that holds `db` open read-write until it
/// is dropped.
pub struct Holder {
    child: Child,
}

impl Holder {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Env var that turns a re-executed test binary into a holder.
pub const HOLD_ENV: &str = "DUCKSAFE_TEST_HOLD_DB";
/// `read_write` or `read_only`: how the holder opens the database.
pub const HOLD_MODE_ENV: &str = "DUCKSAFE_TEST_HOLD_MODE";

/// Starts a process that opens `db` read-write (a real DuckDB writer) and waits for "HOLDING".
/// The binary's one ignored test, `hold_database_child` (tests/it/main.rs), is that process.
pub fn hold(db: &Path) -> Holder {
    hold_as(db, "read_write")
}

/// Like [`hold`], with a read-only open: a reader (a notebook, a DuckDB shell) that blocks
/// writers and restores but lets backups in.
pub fn hold_reader(db: &Path) -> Holder {
    hold_as(db, "read_only")
}

fn hold_as(db: &Path, mode: &str) -> Holder {
    let mut child = command(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hold_database_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLD_ENV, db)
        .env(HOLD_MODE_ENV, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("HOLDING") => break,
            Some(Ok(_)) => {}
            _ => panic!("the holder process did not start"),
        }
    }
    Holder { child }
}

/// Body of the re-executed holder: opens the database read-write and keeps it open until stdin
/// closes. Does nothing when not started by [`hold`].
pub fn hold_database_child() {
    let Ok(path) = std::env::var(HOLD_ENV) else {
        return;
    };
    let d = if std::env::var(HOLD_MODE_ENV).as_deref() == Ok("read_only") {
        Db::open_read_only(Path::new(&path), &Limits::default()).unwrap()
    } else {
        Db::open_read_write(Path::new(&path), &Limits::default()).unwrap()
    };
    println!("HOLDING");
    std::io::stdout().flush().unwrap();
    let mut s = String::new();
    let _ = std::io::stdin().read_line(&mut s);
    drop(d);
}

/// Every file under `dir`, byte for byte (directories with their mode, links by target): what
/// "a dry run wrote nothing" or "a refused run changed nothing" compares. The directory lock
/// included: a dry run does not even write its PID there (see [`but_the_lock`] for a real run).
/// The audit log (`dir/logs`, the default `LOG_DIR`) is left out: every changing command and
/// every hook call appends its line there whatever it decides, by design (tests/it/audit.rs).
pub fn every_byte(dir: &Path) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut m = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    let audit_log = dir.join("logs");
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            let path = e.path();
            if path == audit_log {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            let v = if meta.is_dir() {
                stack.push(path.clone());
                format!("dir {:o}", meta.permissions().mode())
            } else if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&path).unwrap().display())
            } else {
                sha256(&path)
            };
            m.insert(rel, v);
        }
    }
    m
}

/// [`every_byte`] with the content of every directory lock file (`.ducksafe.lock`) left out, its
/// name kept: a real run takes the lock and writes its PID there, which changes nothing else.
/// Only for a real run; a dry run must not even write the lock, so compare all of
/// [`every_byte`] there.
pub fn but_the_lock(
    mut bytes: std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    for (path, v) in &mut bytes {
        if Path::new(path).file_name()
            == Some(std::ffi::OsStr::new(ducksafe::engine::lock::DIR_LOCK_NAME))
        {
            "lock (its PID left out)".clone_into(v);
        }
    }
    bytes
}
