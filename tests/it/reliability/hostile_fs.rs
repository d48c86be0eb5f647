//! A hostile filesystem: planted symlinks, unsafe backup directories, and paths spelled with
//! `..`, `.`, doubled slashes and symlinks.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::cases::{ensure, soak_factor, Tally};
use crate::support::runs::{one_line, paused, start};
use crate::support::{self, bin, fingerprints, jstr, request, write_into_wal, Project};

use ducksafe::engine::store::{Store, LATEST};
use ducksafe::protocol::{ErrorCode, Response};
use serde_json::json;

use super::crash::change_database;
use super::{every_backup_is_complete, latest_is_verified, source_state};

/// Files outside every backup directory that planted symlinks point to.
struct Victims {
    dir: tempfile::TempDir,
    before: BTreeMap<String, String>,
}

impl Victims {
    fn new(manifest_text: &str) -> Victims {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        ducksafe::demo::create_sized(&d.join("victim.duckdb"), 10, 20).unwrap();
        fs::write(d.join("victim.json"), manifest_text).unwrap();
        fs::write(d.join("victim.txt"), "keep me\n").unwrap();
        fs::write(d.join("victim.wal"), "not a WAL\n").unwrap();
        fs::create_dir(d.join("victim_dir")).unwrap();
        fs::write(d.join("victim_dir/a.txt"), "a\n").unwrap();
        fs::create_dir(d.join("quarantine_elsewhere")).unwrap();
        let before = support::every_byte(d);
        Victims { dir, before }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn untouched(&self) -> Result<(), String> {
        let now = support::every_byte(self.dir.path());
        ensure(now == self.before, || {
            let changed: Vec<_> = now
                .iter()
                .filter(|(k, v)| self.before.get(*k) != Some(*v))
                .map(|(k, _)| k.clone())
                .chain(
                    self.before
                        .keys()
                        .filter(|k| !now.contains_key(*k))
                        .cloned(),
                )
                .collect();
            format!("outside the backup directory, written or deleted: {changed:?}")
        })
    }
}

pub(super) fn plant(link: &Path, target: &Path) {
    let _ = fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).unwrap();
}

pub(super) fn is_link_to(link: &Path, target: &Path) -> bool {
    fs::read_link(link).is_ok_and(|t| t == target)
}

/// A pre_run at a fixed instant (so that the backup's id is known in advance).
fn pre_run_at(p: &Project, minute: u32) -> (Response, i32) {
    let now = format!("2025-08-18T{:02}:{:02}:00Z", 10 + minute / 60, minute % 60);
    p.pre_run_env(&[("DUCKSAFE_NOW", &now)])
}

fn id_at(minute: u32) -> String {
    format!(
        "simulation_20250818_{:02}{:02}00",
        10 + minute / 60,
        minute % 60
    )
}

#[test]
fn hostile_filesystem_symlinks() {
    let mut t = Tally::new("hostile_filesystem_symlinks");
    let p = Project::new("BACKUP_KEEP_LAST: 2\n");
    let (r, code) = pre_run_at(&p, 0);
    assert_eq!(code, 0, "{r:?}");
    let first = r.backup.unwrap().id;
    let victims = Victims::new(
        &fs::read_to_string(p.backups().join(format!("{first}.manifest.json"))).unwrap(),
    );
    let dir = p.backups();
    let mut minute = 1;
    // Symlinks at the names the next backup would take.
    for (what, suffix, target) in [
        ("backup", ".duckdb", "victim.duckdb"),
        ("manifest", ".manifest.json", "victim.json"),
        ("checksum file", ".duckdb.sha256", "victim.txt"),
    ] {
        for _ in 0..soak_factor() {
            minute += 1;
            let link = dir.join(format!("{}{suffix}", id_at(minute)));
            plant(&link, &victims.path(target));
            t.case(format!("symlink at the {what}'s name"), || {
                let (r, code) = pre_run_at(&p, minute);
                ensure(code == 0, || format!("{r:?}"))?;
                let id = r.backup.unwrap().id;
                ensure(id != id_at(minute), || {
                    format!("the backup took the planted name {id}")
                })?;
                ensure(is_link_to(&link, &victims.path(target)), || {
                    "the planted symlink was replaced or removed".into()
                })?;
                ensure(latest_is_verified(&dir)? == id, || {
                    "latest does not name the new backup".into()
                })?;
                let listed = Store::open(&dir, false).unwrap().inventory().unwrap();
                ensure(
                    !listed.backups.iter().any(|b| b.id == id_at(minute)),
                    || "the planted name is listed as a backup".into(),
                )?;
                victims.untouched()
            });
            let _ = fs::remove_file(&link);
        }
    }
    // Symlinks at the temporary names, planted while the backup is paused after taking its locks.
    for wal in [false, true] {
        if wal {
            write_into_wal(&p.db(), "DELETE FROM employees WHERE job_level = 4;");
        }
        for _ in 0..soak_factor() {
            minute += 1;
            let label = if wal {
                "symlink at the temporary WAL's name"
            } else {
                "symlink at the temporary file's name"
            };
            t.case(label, || planted_temp(&p, &victims, minute, wal));
        }
    }
    symlinks_at_latest_and_lock(&mut t, &p, &victims, &mut minute);
    symlinks_in_restore(&mut t, &p, &victims, &mut minute);
    t.finish();
}

/// Plants a symlink at the temporary name of a paused backup; the backup must not write through
/// it, and the next run removes the link (not its target).
fn planted_temp(p: &Project, victims: &Victims, minute: u32, wal: bool) -> Result<(), String> {
    let dir = p.backups();
    let now = format!("2025-08-18T{:02}:{:02}:00Z", 10 + minute / 60, minute % 60);
    let mut c = p.cmd(&["hook"]);
    c.env("DUCKSAFE_NOW", &now);
    let input = request("pre_run", &p.config(), "");
    let run = paused(
        c,
        Some(input.as_bytes()),
        "backup.locked",
        &p.path("go-planted"),
    )?;
    let store = Store::open(&dir, false).map_err(|e| e.to_string())?;
    let id = store
        .next_id(
            "simulation",
            chrono::DateTime::parse_from_rfc3339(&now).unwrap().into(),
        )
        .map_err(|e| e.to_string())?;
    let temp = store.temp_path(&id);
    // The paused run's temporary name: this process's PID in it replaced by the run's (only
    // there, not wherever the digits happen to occur in the id).
    let name = temp.file_name().unwrap().to_string_lossy().replacen(
        &format!("backup-{}-", std::process::id()),
        &format!("backup-{}-", run.child.id()),
        1,
    );
    let link = if wal {
        dir.join(format!("{name}.wal"))
    } else {
        dir.join(&name)
    };
    plant(
        &link,
        &victims.path(if wal { "victim.wal" } else { "victim.duckdb" }),
    );
    let out = run.release();
    let r = one_line(&out.stdout, out.status)?;
    victims
        .untouched()
        .map_err(|e| format!("{e} (the run answered {:?})", r.errors))?;
    // Refusing is right; so would be carrying on under another name. Never a partial backup.
    every_backup_is_complete(&dir)?;
    latest_is_verified(&dir)?;
    let (r, code) = pre_run_at(p, minute);
    ensure(code == 0, || format!("the next run failed: {r:?}"))?;
    ensure(fs::symlink_metadata(&link).is_err(), || {
        "the next run left the planted temporary name".into()
    })?;
    victims.untouched()
}

fn symlinks_at_latest_and_lock(t: &mut Tally, p: &Project, victims: &Victims, minute: &mut u32) {
    let dir = p.backups();
    for target in ["victim.duckdb", "victim_dir"] {
        for relative in [false, true] {
            *minute += 1;
            let to = if relative {
                let up = "../".repeat(dir.components().count() - 1);
                PathBuf::from(up).join(victims.path(target).strip_prefix("/").unwrap())
            } else {
                victims.path(target)
            };
            plant(&dir.join(LATEST), &to);
            let m = *minute;
            t.case(format!("`latest` planted to {}", to.display()), || {
                let (r, code) = pre_run_at(p, m);
                ensure(code == 0, || format!("{r:?}"))?;
                let latest = latest_is_verified(&dir)?;
                ensure(latest == r.backup.unwrap().id, || {
                    "latest does not name the new backup".into()
                })?;
                victims.untouched()
            });
        }
    }
    // The directory's lock file is a symlink: never truncated or written through.
    let lock = dir.join(ducksafe::engine::lock::DIR_LOCK_NAME);
    plant(&lock, &victims.path("victim.txt"));
    *minute += 1;
    let m = *minute;
    t.case("the directory lock file is a symlink", || {
        let (r, code) = pre_run_at(p, m);
        victims
            .untouched()
            .map_err(|e| format!("{e} (the run answered {:?})", r.errors))?;
        // Refused as what it is: the lock file cannot be opened (no-follow), named.
        ensure(
            code == 74
                && r.errors.first().is_some_and(|e| {
                    e.code == ErrorCode::IoError
                        && e.message.contains(ducksafe::engine::lock::DIR_LOCK_NAME)
                }),
            || format!("exit {code}: {:?}", r.errors),
        )?;
        every_backup_is_complete(&dir).map(|_| ())
    });
    let _ = fs::remove_file(&lock);
    // `restore latest` and `verify latest` with `latest` planted outside: never the planted
    // file, and never another backup in its place either (issue 20): both refuse, name where
    // the link points, and change nothing.
    plant(&dir.join(LATEST), &victims.path("victim.duckdb"));
    t.case("`restore latest` with `latest` planted outside", || {
        let before = source_state(&p.db());
        for args in [&["verify", "latest"][..], &["restore", "latest"][..]] {
            let out = p.run(args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            ensure(out.status.code() == Some(66), || {
                format!(
                    "`{}` exit {:?}: {stderr}",
                    args.join(" "),
                    out.status.code()
                )
            })?;
            ensure(stderr.contains("victim.duckdb"), || {
                format!(
                    "`{}` does not say where latest points: {stderr}",
                    args.join(" ")
                )
            })?;
        }
        ensure(source_state(&p.db()) == before, || {
            "the database changed".into()
        })?;
        victims.untouched()
    });
}

fn symlinks_in_restore(t: &mut Tally, p: &Project, victims: &Victims, minute: &mut u32) {
    let dir = p.backups();
    *minute += 1;
    let (r, code) = pre_run_at(p, *minute);
    assert_eq!(code, 0, "{r:?}");
    let id = r.backup.unwrap().id;
    // A stored backup swapped for a symlink (its manifest intact): never read, never deleted.
    *minute += 1;
    let (r, _) = pre_run_at(p, *minute);
    let swapped = r.backup.unwrap().id;
    let swapped_path = dir.join(format!("{swapped}.duckdb"));
    fs::remove_file(&swapped_path).unwrap();
    plant(&swapped_path, &victims.path("victim.duckdb"));
    let before = source_state(&p.db());
    t.case("a stored backup swapped for a symlink", || {
        // A backup name that is not a regular file is no backup: neither command finds one.
        for args in [["verify", &swapped], ["restore", &swapped]] {
            let out = p.run(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            ensure(
                out.status.code() == Some(66) && stderr.contains("not found"),
                || {
                    format!(
                        "`{}` exit {:?}: {stderr}",
                        args.join(" "),
                        out.status.code()
                    )
                },
            )?;
        }
        ensure(source_state(&p.db()) == before, || {
            "the database changed".into()
        })?;
        for _ in 0..3 {
            *minute += 1;
            let (r, code) = pre_run_at(p, *minute);
            ensure(code == 0, || format!("{r:?}"))?;
        }
        let out = p.run(&["prune"]);
        ensure(out.status.success(), || {
            String::from_utf8_lossy(&out.stderr).into_owned()
        })?;
        ensure(
            is_link_to(&swapped_path, &victims.path("victim.duckdb")),
            || "rotation or prune removed or replaced the planted link".into(),
        )?;
        victims.untouched()
    });
    let _ = fs::remove_file(&swapped_path);
    let _ = fs::remove_file(dir.join(format!("{swapped}.manifest.json")));
    let _ = fs::remove_file(dir.join(format!("{swapped}.duckdb.sha256")));
    let id = Store::open(&dir, false)
        .unwrap()
        .inventory()
        .unwrap()
        .backups
        .first()
        .map_or(id, |b| b.id.clone());
    // A staged-restore name planted beside the database: unlinked, not followed.
    let staged = p.path(&format!(
        "{}999999-x.duckdb",
        ducksafe::engine::staging::prefix(&p.db())
    ));
    plant(&staged, &victims.path("victim.duckdb"));
    // A WAL name beside the database that is a symlink: moved into quarantine as a link.
    let wal = p.path("simulation.duckdb.wal.recovery");
    plant(&wal, &victims.path("victim.wal"));
    t.case(
        "symlinks at the staged copy's and a WAL's names beside the database",
        || {
            let out = p.run(&["restore", &id]);
            ensure(out.status.success(), || {
                String::from_utf8_lossy(&out.stderr).into_owned()
            })?;
            ensure(fs::symlink_metadata(&staged).is_err(), || {
                "the planted staged name is still there".into()
            })?;
            ensure(fs::symlink_metadata(&wal).is_err(), || {
                "the planted WAL link is still beside the database".into()
            })?;
            victims.untouched()
        },
    );
    // The quarantine folder is a symlink to a folder elsewhere.
    let q = dir.join("quarantine");
    let _ = fs::rename(&q, dir.join("quarantine.before"));
    plant(&q, &victims.path("quarantine_elsewhere"));
    change_database(&p.db(), true, 7);
    t.case(
        "the quarantine folder is a symlink to a folder elsewhere",
        || {
            let before = source_state(&p.db());
            let out = p.run(&["restore", &id]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            // Refused before anything moves: the database and its WAL stay as they are.
            ensure(
                out.status.code() == Some(73) && stderr.contains("symlink"),
                || format!("restore exit {:?}: {stderr}", out.status.code()),
            )?;
            ensure(source_state(&p.db()) == before, || {
                "the database or its WAL changed".into()
            })?;
            victims.untouched()
        },
    );
}

/// The commands that open the backup directory, and what they must answer when it is unsafe.
fn unsafe_dir_commands(p: &Project) -> Vec<(String, Command, Option<String>)> {
    let hook = |req: String| {
        let mut c = bin();
        c.current_dir(p.dir.path()).arg("hook");
        (c, Some(req))
    };
    let post = r#","backup_id":"simulation_20250818_143022","run":{"outcome":"failure"},"on_failure":"restore""#;
    let mut v: Vec<(String, Command, Option<String>)> = Vec::new();
    for (label, (c, input)) in [
        ("hook pre_run", hook(request("pre_run", &p.config(), ""))),
        (
            "hook pre_run dry_run",
            hook(request("pre_run", &p.config(), r#","dry_run":true"#)),
        ),
        ("hook validate", hook(request("validate", &p.config(), ""))),
        (
            "hook post_run restore",
            hook(request("post_run", &p.config(), post)),
        ),
    ] {
        v.push((label.to_owned(), c, input));
    }
    for args in [
        &["backup"][..],
        &["list"],
        &["verify", "--all"],
        &["restore"],
        &["prune"],
    ] {
        v.push((format!("ducksafe {}", args.join(" ")), p.cmd(args), None));
    }
    v
}

/// Makes a backup directory unsafe.
type MakeUnsafe = fn(&Path);

#[test]
fn hostile_filesystem_unsafe_backup_dir() {
    let mut t = Tally::new("hostile_filesystem_unsafe_backup_dir");
    let root = ducksafe::files::euid() == 0;
    let mut skipped = Vec::new();
    // (label, needs root, how to make `backups` unsafe)
    let variants: [(&str, bool, MakeUnsafe); 7] = [
        ("mode 0777", false, |d| set_mode(d, 0o777)),
        ("mode 1777 (sticky)", false, |d| set_mode(d, 0o1777)),
        ("mode 0702 (world-writable only)", false, |d| {
            set_mode(d, 0o702);
        }),
        ("owned by another user, mode 0700", true, |d| {
            chown_nobody(d);
        }),
        ("owned by another user, mode 0755", true, |d| {
            set_mode(d, 0o755);
            chown_nobody(d);
        }),
        // A private target (0700): only the refusal of the link itself can refuse it.
        ("a symlink to a private directory", false, |d| {
            let real = d.with_file_name("real_backups");
            fs::rename(d, &real).unwrap();
            set_mode(&real, 0o700);
            std::os::unix::fs::symlink(&real, d).unwrap();
        }),
        ("a regular file", false, |d| {
            fs::remove_dir_all(d).unwrap();
            fs::write(d, "not a directory\n").unwrap();
        }),
    ];
    for (label, needs_root, setup) in variants {
        if needs_root && !root {
            skipped.push(label);
            continue;
        }
        for _ in 0..soak_factor() {
            let p = Project::new("");
            let (r, code) = p.pre_run();
            assert_eq!(code, 0, "{r:?}");
            setup(&p.backups());
            let before = support::every_byte(p.dir.path());
            for (cmd_label, cmd, input) in unsafe_dir_commands(&p) {
                t.case(format!("backup directory {label}: {cmd_label}"), || {
                    let out = start(cmd, input.as_deref().map(str::as_bytes)).finish(None);
                    ensure(out.status.code() == Some(73), || {
                        format!("exit {:?}: {}", out.status.code(), out.stderr)
                    })?;
                    if input.is_some() {
                        let r = one_line(&out.stdout, out.status)?;
                        ensure(r.errors[0].code == ErrorCode::BackupDirUnsafe, || {
                            format!("{:?}", r.errors)
                        })?;
                    } else {
                        ensure(out.stderr.contains("is unsafe"), || out.stderr.clone())?;
                    }
                    ensure(support::every_byte(p.dir.path()) == before, || {
                        "files changed in the project".into()
                    })
                });
            }
        }
    }
    if !skipped.is_empty() {
        support::skip(
            "hostile_filesystem_unsafe_backup_dir (other owners)",
            &format!("not root: cannot chown, skipped {skipped:?}"),
        );
        t.detail("skipped (not root)", json!(skipped));
    }
    t.finish();
}

pub(super) fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn chown_nobody(p: &Path) {
    std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
}

/// A layout for path resolution: `root/conf` holds the configurations and a symlink
/// `link -> root/other/deep/er`; `root/data/sim.duckdb` is the database, and
/// `root/other/data/sim.duckdb` a decoy that only a physical (not lexical) `..` would reach.
struct PathLayout {
    root: tempfile::TempDir,
}

impl PathLayout {
    fn new() -> PathLayout {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in ["conf", "data", "other/deep/er", "other/data", "work"] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        ducksafe::demo::create_sized(&r.join("data/sim.duckdb"), 40, 80).unwrap();
        ducksafe::demo::create_sized(&r.join("other/data/sim.duckdb"), 7, 9).unwrap();
        std::os::unix::fs::symlink(r.join("other/deep/er"), r.join("conf/link")).unwrap();
        PathLayout { root }
    }
    fn p(&self, rel: &str) -> String {
        self.root.path().join(rel).display().to_string()
    }
}

/// One way of spelling the paths, and what the response must report.
struct PathCase {
    label: String,
    /// The request's `config` value.
    config: String,
    env: Vec<(&'static str, String)>,
    db_path: String,
    backup_dir: String,
    config_path: Option<String>,
}

impl PathLayout {
    /// Writes `conf/<name>` with `body` after the common lines.
    fn conf(&self, name: &str, body: &str) -> PathBuf {
        let path = self.root.path().join("conf").join(name);
        fs::write(
            &path,
            format!("LOG_LEVEL: INFO\nBACKUP_MIN_FREE_BYTES: 0\n{body}"),
        )
        .unwrap();
        path
    }

    fn file_case(&self, label: &str, name: &str, body: &str, backup_dir: &str) -> PathCase {
        let path = self.conf(name, body);
        PathCase {
            label: label.to_owned(),
            config: format!(r#"{{"path":{}}}"#, jstr(&path)),
            env: Vec::new(),
            db_path: self.p("data/sim.duckdb"),
            backup_dir: self.p(backup_dir),
            config_path: Some(path.display().to_string()),
        }
    }

    fn cases(&self) -> Vec<PathCase> {
        let root = self.root.path().display().to_string();
        let mut v = vec![
            self.file_case(
                "relative `..`",
                "a.yaml",
                "DB_PATH: ../data/sim.duckdb\nBACKUP_DIR: ../bk1\n",
                "bk1",
            ),
            self.file_case(
                "`.` and `..` mixed",
                "b.yaml",
                "DB_PATH: ./../data/./sim.duckdb\nBACKUP_DIR: ../data/../bk2/./\n",
                "bk2",
            ),
            self.file_case(
                "absolute paths with `..` inside",
                "c.yaml",
                &format!("DB_PATH: {root}/x/../data/sim.duckdb\nBACKUP_DIR: {root}/conf/../bk3\n"),
                "bk3",
            ),
            self.file_case(
                "`..` after a symlink is lexical",
                "d.yaml",
                "DB_PATH: link/../../data/sim.duckdb\nBACKUP_DIR: link/../../bk4\n",
                "bk4",
            ),
            self.file_case(
                "doubled slashes",
                "e.yaml",
                &format!("DB_PATH: {root}//data//sim.duckdb\nBACKUP_DIR: {root}//bk5//\n"),
                "bk5",
            ),
            self.file_case(
                "`/..` at the filesystem root",
                "f.yaml",
                &format!("DB_PATH: /..{root}/data/sim.duckdb\nBACKUP_DIR: /../..{root}/bk6\n"),
                "bk6",
            ),
        ];
        let g = self.conf("g.yaml", "DB_PATH: ../data/sim.duckdb\n");
        v.push(PathCase {
            label: "a relative config.path, from the hook's working directory".into(),
            config: r#"{"path":"../conf/g.yaml"}"#.into(),
            env: Vec::new(),
            db_path: self.p("data/sim.duckdb"),
            backup_dir: self.p("conf/backups"),
            config_path: Some(g.display().to_string()),
        });
        v.push(PathCase {
            label: "an inline configuration, from the hook's working directory".into(),
            config: r#"{"inline":{"DB_PATH":"../data/sim.duckdb","LOG_LEVEL":"INFO","BACKUP_DIR":"../bk8/.","BACKUP_MIN_FREE_BYTES":0}}"#.into(),
            env: Vec::new(),
            db_path: self.p("data/sim.duckdb"),
            backup_dir: self.p("bk8"),
            config_path: None,
        });
        v.push(PathCase {
            label: "an environment override, from the configuration's directory".into(),
            config: format!(r#"{{"path":{}}}"#, jstr(&g)),
            env: vec![("DUCKSAFE_BACKUP_DIR", "../bk9".to_owned())],
            db_path: self.p("data/sim.duckdb"),
            backup_dir: self.p("bk9"),
            config_path: Some(g.display().to_string()),
        });
        v
    }

    /// Runs the hook from `root/work`.
    fn hook(&self, request: &str, env: &[(&str, String)]) -> Result<Response, String> {
        let mut c = bin();
        c.current_dir(self.root.path().join("work")).arg("hook");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = start(c, Some(request.as_bytes())).finish(None);
        one_line(&out.stdout, out.status)
    }
}

/// A pre_run with the case's spelling reports the expected absolute paths, and backs up the
/// database they name into the directory they name.
fn check_path_case(l: &PathLayout, c: &PathCase) -> Result<(), String> {
    let req = format!(
        r#"{{"protocol_version":1,"event":"pre_run","config":{}}}"#,
        c.config
    );
    let r = l.hook(&req, &c.env)?;
    ensure(r.exit_code == 0, || format!("{r:?}"))?;
    let got = |k: &str| r.paths.get(k).cloned();
    ensure(
        got("db_path").as_deref() == Some(c.db_path.as_str()),
        || format!("db_path {:?}, expected {}", got("db_path"), c.db_path),
    )?;
    ensure(
        got("backup_dir").as_deref() == Some(c.backup_dir.as_str()),
        || {
            format!(
                "backup_dir {:?}, expected {}",
                got("backup_dir"),
                c.backup_dir
            )
        },
    )?;
    ensure(got("config") == c.config_path, || {
        format!("config {:?}, expected {:?}", got("config"), c.config_path)
    })?;
    let b = r.backup.ok_or("no backup")?;
    ensure(b.path.starts_with(&format!("{}/", c.backup_dir)), || {
        format!("the backup is at {}, not in {}", b.path, c.backup_dir)
    })?;
    let real = fingerprints(&l.root.path().join("data/sim.duckdb"));
    ensure(fingerprints(Path::new(&b.path)) == real, || {
        "the backup is not of the database the paths name (the decoy?)".into()
    })
}

#[test]
fn hostile_filesystem_paths() {
    let mut t = Tally::new("hostile_filesystem_paths");
    let layout = PathLayout::new();
    for c in layout.cases() {
        for _ in 0..soak_factor() {
            t.case(&c.label, || check_path_case(&layout, &c));
        }
    }
    // BACKUP_DIR spelled so that it resolves to the database's own folder: refused like the
    // plain spelling.
    let root = layout.root.path().display().to_string();
    let db = layout.p("data/sim.duckdb");
    for spelling in [
        format!("{root}/data"),
        format!("{root}/data/"),
        format!("{root}/conf/../data"),
        format!("/..{root}/data"),
    ] {
        let path = layout.conf(
            "h.yaml",
            &format!("DB_PATH: {db}\nBACKUP_DIR: {spelling}\n"),
        );
        t.case(
            format!("BACKUP_DIR `{spelling}` is the database's folder"),
            || {
                let r = layout.hook(&request("validate", &path, ""), &[])?;
                ensure(
                    r.exit_code == 78
                        && r.errors
                            .iter()
                            .any(|e| e.path.as_deref() == Some("/BACKUP_DIR")),
                    || format!("accepted or refused otherwise: {r:?}"),
                )
            },
        );
    }
    t.finish();
}
