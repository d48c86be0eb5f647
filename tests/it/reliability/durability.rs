//! Power loss, the crash a kill cannot simulate: after a power cut, a file's data and a folder's
//! names are what was fsynced, whatever the process had done. The kills of `crash.rs` stop the
//! process at every failpoint, but the kernel still writes out everything it was given, so no
//! kill would catch an fsync removed or moved to the wrong place.
//!
//! These cases run the real binary under `strace` and check the order of its system calls
//! against the two rules a power cut imposes (those of ALICE, "All File Systems Are Not Created
//! Equal", OSDI 2014):
//! - **data before name:** a file this process wrote is fsynced after its last write and before
//!   it is renamed to the name that publishes it; otherwise the name can survive a power cut
//!   pointing at missing or partial data;
//! - **names before the answer:** every folder in which a rename, a symlink or a mkdir made a
//!   name is fsynced after it and before the answer is written (`proceed`, `restored`): the
//!   answer promises the backup or the restored database, and a folder entry not yet synced can
//!   vanish with the power. A name made after the answer is synced before the process ends.
//!
//! The cases: a pre_run (full copy, with a rotation), a pre_run that converts the previous
//! backup into the block store, a post_run that restores, and the operator's `restore`.
//! Without `strace` they skip with a message (CI installs it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{self, command, request, Project};

/// One system call of the trace, with the trace lines where it started and where it returned.
#[derive(Debug)]
struct Call {
    start: usize,
    end: usize,
    /// The call as strace printed it, `name(args) = ret`, an interrupted call joined up.
    text: String,
}

impl Call {
    fn name(&self) -> &str {
        self.text.split('(').next().unwrap_or("")
    }

    fn succeeded(&self) -> bool {
        self.split()
            .is_some_and(|(_, ret)| !ret.starts_with('-') && !ret.starts_with('?'))
    }

    /// The arguments and the return value: strace ends a call with `)`, padding, `= RET`
    /// (and, for an error, its name and text in parentheses).
    fn split(&self) -> Option<(&str, &str)> {
        let open = self.text.find('(')? + 1;
        self.text
            .char_indices()
            .rev()
            .filter(|&(_, c)| c == ')')
            .find_map(|(i, _)| {
                let after = self.text[i + 1..].trim_start();
                after
                    .strip_prefix("= ")
                    .map(|ret| (&self.text[open.min(i)..i], ret.trim_start()))
            })
    }

    /// The paths strace's `-y` printed for the file descriptors among the arguments, in order.
    fn fd_paths(&self) -> Vec<PathBuf> {
        let args = self.args();
        let mut out = Vec::new();
        let mut rest = args;
        while let Some(open) = rest.find('<') {
            let before = &rest[..open];
            let close = rest[open..].find('>').map_or(rest.len(), |c| open + c);
            if before.ends_with(|c: char| c.is_ascii_digit()) || before.ends_with("AT_FDCWD") {
                out.push(PathBuf::from(&rest[open + 1..close]));
            }
            rest = &rest[(close + 1).min(rest.len())..];
        }
        out
    }

    /// The quoted string arguments (paths), in order.
    fn strings(&self) -> Vec<String> {
        self.args()
            .split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    fn args(&self) -> &str {
        self.split().map_or("", |(args, _)| args)
    }

    /// The file descriptor number of the first argument.
    fn first_fd(&self) -> Option<u32> {
        self.args()
            .split(['<', ','])
            .next()
            .and_then(|n| n.trim().parse().ok())
    }
}

/// A path argument of an `*at` call: a relative one joined to the folder of the descriptor
/// before it.
fn at_path(dir: Option<&PathBuf>, s: &str) -> PathBuf {
    match dir {
        Some(d) if !s.starts_with('/') => d.join(s),
        _ => PathBuf::from(s),
    }
}

/// Parses `strace -f -y -qq -o FILE` output into calls, an interrupted call (`<unfinished
/// ...>` then `<... name resumed>`) joined up and placed where it returned.
fn parse(trace: &str) -> Vec<Call> {
    let mut pending: HashMap<&str, (usize, String)> = HashMap::new();
    let mut calls = Vec::new();
    for (i, line) in trace.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((_, tail)) = resumed.split_once("resumed>") else {
                continue;
            };
            if let Some((start, head)) = pending.remove(pid) {
                calls.push(Call {
                    start,
                    end: i,
                    text: format!("{head}{tail}"),
                });
            }
        } else if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid, (i, head.trim_end().to_owned()));
        } else {
            calls.push(Call {
                start: i,
                end: i,
                text: rest.to_owned(),
            });
        }
    }
    calls.sort_by_key(|c| c.end);
    calls
}

/// What the trace did to names and data, and the breaches of the two rules.
fn breaches(trace: &str) -> (Vec<String>, usize) {
    let calls = parse(trace);
    // The answer: the first write to standard output.
    let answer = calls
        .iter()
        .find(|c| matches!(c.name(), "write" | "writev") && c.first_fd() == Some(1))
        .map_or(usize::MAX, |c| c.start);
    let mut written: HashMap<PathBuf, usize> = HashMap::new();
    let mut synced: Vec<(PathBuf, usize)> = Vec::new();
    let mut symlinks: Vec<PathBuf> = Vec::new();
    // (the folder that must be synced, the line its name changed, what changed it)
    let mut named: Vec<(PathBuf, usize, String)> = Vec::new();
    let mut problems = Vec::new();
    let mut renames = 0;
    for c in &calls {
        if !c.succeeded() {
            continue;
        }
        let fds = c.fd_paths();
        let strings = c.strings();
        match c.name() {
            "write" | "pwrite64" | "writev" | "pwritev" | "pwritev2" | "fallocate" => {
                if let Some(p) = fds.first() {
                    written.insert(p.clone(), c.end);
                }
            }
            "copy_file_range" => {
                if let Some(p) = fds.get(1) {
                    written.insert(p.clone(), c.end);
                }
            }
            "fsync" | "fdatasync" => {
                if let Some(p) = fds.first() {
                    synced.push((p.clone(), c.end));
                }
            }
            "symlink" | "symlinkat" => {
                let link = match c.name() {
                    "symlink" => strings.get(1).map(PathBuf::from),
                    _ => strings.get(1).map(|s| at_path(fds.first(), s)),
                };
                if let Some(link) = link {
                    named.push((support_parent(&link), c.end, c.text.clone()));
                    symlinks.push(link);
                }
            }
            "mkdir" | "mkdirat" => {
                let dir = match c.name() {
                    "mkdir" => strings.first().map(PathBuf::from),
                    _ => strings.first().map(|s| at_path(fds.first(), s)),
                };
                if let Some(dir) = dir {
                    named.push((support_parent(&dir), c.end, c.text.clone()));
                }
            }
            "rename" | "renameat" | "renameat2" => {
                let (from, to) = if c.name() == "rename" {
                    (
                        strings.first().map(PathBuf::from),
                        strings.get(1).map(PathBuf::from),
                    )
                } else {
                    (
                        strings.first().map(|s| at_path(fds.first(), s)),
                        strings.get(1).map(|s| at_path(fds.get(1), s)),
                    )
                };
                let (Some(from), Some(to)) = (from, to) else {
                    problems.push(format!("cannot read the paths of `{}`", c.text));
                    continue;
                };
                renames += 1;
                // Data before name, for a file this process wrote (a symlink has no data).
                if let Some(&last_write) = written.get(&from) {
                    if !symlinks.contains(&from)
                        && !synced
                            .iter()
                            .any(|(p, at)| *p == from && *at > last_write && *at < c.start)
                    {
                        problems.push(format!(
                            "`{}` is renamed to `{}` without an fsync after its last write: after a power cut the name can point at data that never reached the disk",
                            from.display(),
                            to.display()
                        ));
                    }
                }
                named.push((support_parent(&to), c.end, c.text.clone()));
                if support_parent(&from) != support_parent(&to) {
                    named.push((support_parent(&from), c.end, c.text.clone()));
                }
                // What is written under the old name's descriptor from now on shows the new one.
                if let Some(at) = written.remove(&from) {
                    written.insert(to, at);
                }
            }
            _ => {}
        }
    }
    problems.extend(unsynced(&named, &synced, answer));
    (problems, renames)
}

/// Names before the answer: each folder in `named` fsynced after its name changed and before
/// the answer (or, for a name made after the answer, before the end of the trace).
fn unsynced(
    named: &[(PathBuf, usize, String)],
    synced: &[(PathBuf, usize)],
    answer: usize,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (dir, at, what) in named {
        let by = if *at < answer { answer } else { usize::MAX };
        if !synced.iter().any(|(p, s)| p == dir && *s > *at && *s < by) {
            problems.push(format!(
                "folder `{}` is not fsynced after `{what}`{}: a power cut can undo it",
                dir.display(),
                if by == answer {
                    " and before the answer"
                } else {
                    ""
                }
            ));
        }
    }
    problems
}

fn support_parent(p: &Path) -> PathBuf {
    p.parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

/// Whether `strace` can trace a child here.
fn strace_works() -> bool {
    command("strace")
        .args(["-qq", "-o", "/dev/null", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs ducksafe with `args` in `p`'s folder under strace (`input` on stdin); returns its
/// output and the trace.
fn traced(p: &Project, args: &[&str], input: &[u8]) -> (Output, String) {
    let log = p.path("strace.log");
    let mut c = command("strace");
    c.current_dir(p.dir.path())
        .args(["-f", "-y", "-qq", "-e", "signal=none", "-o"])
        .arg(&log)
        .args([
            "-e",
            "trace=write,pwrite64,writev,pwritev,pwritev2,fallocate,copy_file_range,fsync,fdatasync,rename,renameat,renameat2,symlink,symlinkat,mkdir,mkdirat",
            "--",
            env!("CARGO_BIN_EXE_ducksafe"),
        ])
        .args(args)
        .env_remove("DUCKSAFE_CONFIG")
        .env_remove("DUCKSAFE_FAILPOINT")
        .env_remove("DUCKSAFE_NOW")
        .env_remove("DUCKSAFE_DB_PATH");
    let out = support::pipe(c, input);
    let trace = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    (out, trace)
}

/// Asserts the trace keeps both rules and renamed at least `min_renames` names.
fn assert_durable(case: &str, out: &Output, trace: &str, min_renames: usize) {
    assert!(
        out.status.success(),
        "{case}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        support::stderr(out)
    );
    let (problems, renames) = breaches(trace);
    assert!(
        problems.is_empty(),
        "{case}: {} breach(es):\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(
        renames >= min_renames,
        "{case}: only {renames} rename(s) traced: the trace does not show the publication"
    );
}

fn change(p: &Project, sql: &str) {
    let db =
        ducksafe::duck::Db::open_read_write(&p.db(), &ducksafe::duck::Limits::default()).unwrap();
    db.execute_batch(sql).unwrap();
    db.close().unwrap();
}

#[test]
fn a_pre_run_publishes_and_rotates_in_an_order_a_power_cut_cannot_break() {
    if !strace_works() {
        support::skip("durability", "strace is not installed or cannot trace here");
        return;
    }
    let p = Project::new("BACKUP_KEEP_LAST: 1\n");
    let req = request("pre_run", &p.config(), "");
    // The first: the backup folder made, nothing to rotate. The backup file, its manifest, its
    // checksum file and `latest` are renamed into place.
    let (out, trace) = traced(&p, &["hook"], req.as_bytes());
    assert_durable("first pre_run", &out, &trace, 4);
    // The second rotates the first away.
    let (out, trace) = traced(&p, &["hook"], req.as_bytes());
    assert_durable("second pre_run", &out, &trace, 4);
    assert_eq!(p.backup_files().len(), 1, "the first was rotated away");
}

#[test]
fn a_conversion_into_the_block_store_is_durable_before_the_answer() {
    if !strace_works() {
        support::skip("durability", "strace is not installed or cannot trace here");
        return;
    }
    let p = Project::new("BACKUP_STORAGE: incremental\n");
    support::assert_ok(&p.run(&["backup"]));
    change(
        &p,
        "UPDATE employees SET current_compensation = current_compensation * 1.1 WHERE hash(employee_id) % 3 = 0; CHECKPOINT;",
    );
    let (out, trace) = traced(&p, &["--json", "backup"], b"");
    // The new backup's four names, the pack and the previous backup's manifest rewritten.
    assert_durable("conversion", &out, &trace, 6);
    assert!(
        trace.contains("/packs/"),
        "the previous backup was converted: a pack was written"
    );
}

#[test]
fn a_restore_is_durable_before_it_answers() {
    if !strace_works() {
        support::skip("durability", "strace is not installed or cannot trace here");
        return;
    }
    let p = Project::new("");
    // An operator's backup: no guarded run is recorded, so the traced post_run (whose parent is
    // strace, not this process) may restore it.
    let out = p.run(&["--json", "backup"]);
    support::assert_ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = report["backup"]["id"].as_str().unwrap().to_owned();
    change(&p, "CREATE TABLE broken AS SELECT 1 AS x; CHECKPOINT;");
    let req = request(
        "post_run",
        &p.config(),
        &format!(
            r#","backup_id":"{id}","run":{{"outcome":"failure","exit_code":3}},"on_failure":"restore""#
        ),
    );
    let (out, trace) = traced(&p, &["hook"], req.as_bytes());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"decision\":\"restored\""),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The staged copy into place, the old database into quarantine.
    assert_durable("post_run restore", &out, &trace, 2);

    change(&p, "CREATE TABLE broken AS SELECT 1 AS x; CHECKPOINT;");
    let (out, trace) = traced(&p, &["--config", "config.yaml", "restore", &id], b"");
    assert_durable("restore", &out, &trace, 2);
}
