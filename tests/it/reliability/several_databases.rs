//! Several databases on one machine (issue 17): one database's commands never use, delete or
//! restore another's backups.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::cases::{ensure, soak_factor, Tally};
use crate::support::runs::{killed_where_meant, one_line, paused, run_killed, start, Kill, Killed};
use crate::support::{self, bin, fingerprints, request, sha256, Project};

use ducksafe::duck::{Db, Limits};
use ducksafe::engine::store::LATEST;
use ducksafe::protocol::{Decision, ErrorCode, Response, Status};
use serde_json::{json, Value};

use super::crash::{change_database, journals};
use super::disk_full::{project_on, Tmpfs};
use super::hostile_fs::{plant, set_mode};
use super::{backup_ids, names, source_state};

/// A folder with several databases and their configurations: `name.duckdb` beside
/// `name.yaml`, each database a little different (`k` rows in a table of its own).
struct Machine {
    root: tempfile::TempDir,
}

impl Machine {
    fn new() -> Machine {
        Machine {
            root: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }
    /// Creates `rel` (a database with a table `only_<tag>` of `k` rows) and, beside it, its
    /// configuration `<rel without .duckdb>.yaml` with `BACKUP_DIR: backup_dir` and `extra`.
    fn database(&self, rel: &str, tag: &str, k: u64, backup_dir: &str, extra: &str) -> PathBuf {
        let db = self.path(rel);
        fs::create_dir_all(db.parent().unwrap()).unwrap();
        ducksafe::demo::create_sized(&db, 120, 400).unwrap();
        let d = Db::open_read_write(&db, &Limits::default()).unwrap();
        d.execute_batch(&format!(
            "CREATE TABLE only_{tag} AS SELECT range AS i FROM range({k}); CHECKPOINT;"
        ))
        .unwrap();
        d.close().unwrap();
        let config = db.with_extension("yaml");
        fs::write(
            &config,
            format!(
                "DB_PATH: {}\nLOG_LEVEL: INFO\nBACKUP_MIN_FREE_BYTES: 0\nBACKUP_DIR: {backup_dir}\n{extra}",
                db.file_name().unwrap().to_string_lossy()
            ),
        )
        .unwrap();
        config
    }
}

/// `ducksafe --config CONFIG ARGS` from the configuration's folder.
fn cli(config: &Path, args: &[&str]) -> Command {
    let mut c = bin();
    c.current_dir(config.parent().unwrap())
        .arg("--config")
        .arg(config)
        .args(args);
    c
}

/// Runs a command to its end.
fn finish(c: Command, stdin: Option<&str>) -> Killed {
    start(c, stdin.map(str::as_bytes)).finish(None)
}

/// The hook's answer to `req` from the configuration's folder, with `env`.
fn hook_at(config: &Path, req: &str, env: &[(&str, &str)]) -> Result<Response, String> {
    let mut c = bin();
    c.current_dir(config.parent().unwrap()).arg("hook");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = finish(c, Some(req));
    one_line(&out.stdout, out.status)
}

/// A pre_run of `config` that must succeed; returns the backup's id and path.
fn backed_up(config: &Path, env: &[(&str, &str)]) -> Result<(String, PathBuf), String> {
    let r = hook_at(config, &request("pre_run", config, ""), env)?;
    ensure(r.exit_code == 0, || format!("pre_run failed: {r:?}"))?;
    let b = r.backup.ok_or("no backup in the response")?;
    Ok((b.id, PathBuf::from(b.path)))
}

/// A refusal with `code` and exit `exit` whose message names every one of `words`.
fn refused(r: &Response, code: ErrorCode, words: &[&str]) -> Result<(), String> {
    ensure(
        r.status == Status::Error && r.errors.first().map(|e| e.code) == Some(code),
        || format!("expected {code:?}, got {r:?}"),
    )?;
    ensure(r.exit_code == code.exit_code(), || {
        format!("exit {} for {code:?}", r.exit_code)
    })?;
    let m = &r.errors[0].message;
    for w in words {
        ensure(m.contains(w), || {
            format!("the message does not name `{w}`: {m}")
        })?;
    }
    Ok(())
}

/// A command's exit code and stderr, when it must fail with `exit` and say every one of `words`.
fn cli_refused(out: &Killed, exit: i32, words: &[&str]) -> Result<(), String> {
    ensure(out.status.code() == Some(exit), || {
        format!(
            "exit {:?} (expected {exit}): {}",
            out.status.code(),
            out.stderr
        )
    })?;
    for w in words {
        ensure(out.stderr.contains(w), || {
            format!("stderr does not say `{w}`: {}", out.stderr)
        })?;
    }
    Ok(())
}

fn cli_ok(out: &Killed) -> Result<String, String> {
    ensure(out.status.success(), || {
        format!("exit {:?}: {}", out.status.code(), out.stderr)
    })?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Names of staged restore copies in a folder.
fn staged_copies(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with(".ducksafe-tmp-restore-"))
        .collect()
}

#[test]
fn several_databases_on_one_machine() {
    let mut t = Tally::new("several_databases_on_one_machine");
    for _ in 0..soak_factor() {
        same_file_name_one_backup_dir(&mut t);
        another_databases_backup_in_the_folder(&mut t);
        rollback_carries_the_overrides(&mut t);
        a_moved_project_needs_adopt(&mut t);
        cleanup_spares_other_databases_and_live_restores(&mut t);
        a_lost_staged_copy_is_rolled_back(&mut t);
        a_symlinked_db_path_is_refused_everywhere(&mut t);
        quarantine_in_a_system_folder(&mut t);
        system_folders_are_refused(&mut t);
        restore_from_read_only_media(&mut t);
        directories_of_earlier_versions(&mut t);
        smaller_promises(&mut t);
    }
    t.finish();
}

/// Issue 17, hole 1: `a/simulation.duckdb` and `b/simulation.duckdb`, one `BACKUP_DIR`.
fn same_file_name_one_backup_dir(t: &mut Tally) {
    let mach = Machine::new();
    let bk = mach.path("srv/bk/backups").display().to_string();
    let conf_a = mach.database("a/simulation.duckdb", "a", 3, &bk, "BACKUP_KEEP_LAST: 2\n");
    let conf_b = mach.database("b/simulation.duckdb", "b", 5, &bk, "BACKUP_KEEP_LAST: 2\n");
    let a_db = mach.path("a/simulation.duckdb");
    let b_db = mach.path("b/simulation.duckdb");
    let a_fp = fingerprints(&a_db);
    t.case(
        "same file name, one BACKUP_DIR: the second database is refused",
        || {
            let (a_id, a_path) = backed_up(&conf_a, &[])?;
            let b_before = sha256(&b_db);
            let r = hook_at(&conf_b, &request("pre_run", &conf_b, ""), &[])?;
            refused(
                &r,
                ErrorCode::BackupDirUnsafe,
                &[&a_db.display().to_string(), &b_db.display().to_string()],
            )?;
            // The way forward is a BACKUP_DIR of its own; `adopt` is not offered while `a`
            // still exists, and refuses: it would hand a's backups (and restores) to b.
            ensure(
                r.errors[0]
                    .hint
                    .as_deref()
                    .is_some_and(|h| h.contains("its own `BACKUP_DIR`") && !h.contains("adopt")),
                || format!("the hint: {:?}", r.errors[0].hint),
            )?;
            let owner = Path::new(&bk).join(ducksafe::engine::identity::OWNER_FILE);
            let owner_before = sha256(&owner);
            cli_refused(
                &finish(cli(&conf_b, &["adopt"]), None),
                73,
                &["still exists"],
            )?;
            ensure(sha256(&owner) == owner_before, || {
                "a refused adopt changed the owner file".into()
            })?;
            // b's restore, post_run, list and prune never reach a's backups.
            let post = format!(
                r#","backup_id":"{a_id}","run":{{"outcome":"failure"}},"on_failure":"restore""#
            );
            let r = hook_at(&conf_b, &request("post_run", &conf_b, &post), &[])?;
            refused(&r, ErrorCode::BackupDirUnsafe, &[])?;
            for args in [
                &["restore"][..],
                &["restore", a_id.as_str()],
                &["list"],
                &["prune"],
            ] {
                cli_refused(
                    &finish(cli(&conf_b, args), None),
                    73,
                    &["belongs to the database"],
                )?;
            }
            ensure(sha256(&b_db) == b_before, || "b changed".into())?;
            // a's own backups are intact; a's rollback restores a's data.
            ensure(a_path.exists(), || "a's backup was rotated away".into())?;
            change_database(&a_db, true, 1);
            let r = hook_at(&conf_a, &request("post_run", &conf_a, &post), &[])?;
            ensure(r.decision == Decision::Restored, || format!("{r:?}"))?;
            ensure(fingerprints(&a_db) == a_fp, || {
                "a does not hold a's data".into()
            })
        },
    );
}

/// A backup of another database copied into the folder (with an id, and as an earlier
/// ducksafe wrote it, without): invisible to restore, `latest`, rotation and `list`.
fn another_databases_backup_in_the_folder(t: &mut Tally) {
    let mach = Machine::new();
    let conf_a = mach.database(
        "a/simulation.duckdb",
        "a",
        3,
        "backups",
        "BACKUP_KEEP_LAST: 1\n",
    );
    let conf_b = mach.database("b/simulation.duckdb", "b", 5, "backups", "");
    let a_db = mach.path("a/simulation.duckdb");
    let a_bk = mach.path("a/backups");
    t.case(
        "another database's backups in the folder are never used",
        || {
            let (a_id, _) = backed_up(&conf_a, &[("DUCKSAFE_NOW", "2025-08-18T10:00:00Z")])?;
            let a_fp = fingerprints(&a_bk.join(format!("{a_id}.duckdb")));
            let mut foreign = Vec::new();
            for (minute, strip_id) in [(1, false), (2, true)] {
                let now = format!("2025-08-18T10:0{minute}:00Z");
                let (b_id, _) = backed_up(&conf_b, &[("DUCKSAFE_NOW", &now)])?;
                for ext in ["duckdb", "duckdb.sha256", "manifest.json"] {
                    let from = mach.path(&format!("b/backups/{b_id}.{ext}"));
                    let to = a_bk.join(format!("{b_id}.{ext}"));
                    fs::copy(&from, &to).map_err(|e| e.to_string())?;
                    if strip_id && ext == "manifest.json" {
                        let mut doc: Value =
                            serde_json::from_slice(&fs::read(&to).unwrap()).unwrap();
                        doc["source"].as_object_mut().unwrap().remove("database_id");
                        fs::write(&to, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
                    }
                }
                foreign.push(b_id);
            }
            // `latest` pointed at the newest foreign backup by hand.
            plant(
                &a_bk.join(LATEST),
                Path::new(&format!("{}.duckdb", foreign[1])),
            );
            let out = cli_ok(&finish(cli(&conf_a, &["list", "--json"]), None))?;
            let listing: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
            let listed: Vec<&str> = listing["backups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["id"].as_str().unwrap())
                .collect();
            ensure(listed == [a_id.as_str()], || {
                format!("list shows {listed:?}")
            })?;
            let notes = listing["unmanaged"].to_string();
            ensure(notes.contains("another database"), || notes.clone())?;
            change_database(&a_db, true, 2);
            // `latest` names no backup of this database: refused (issue 20), never another's
            // backup and never a silent substitute; by its id, a's own backup restores.
            let changed = sha256(&a_db);
            let out = finish(cli(&conf_a, &["restore"]), None);
            cli_refused(&out, 66, &["points to"])?;
            ensure(sha256(&a_db) == changed, || {
                "`restore` (latest) changed the database".into()
            })?;
            cli_ok(&finish(cli(&conf_a, &["restore", a_id.as_str()]), None))?;
            ensure(fingerprints(&a_db) == a_fp, || {
                "`restore ID` did not restore a's own backup".into()
            })?;
            for id in &foreign {
                let out = finish(cli(&conf_a, &["restore", id.as_str()]), None);
                cli_refused(&out, 66, &["not found"])?;
            }
            // Rotation (BACKUP_KEEP_LAST: 1) of a never deletes them; verify --all reports them.
            backed_up(&conf_a, &[("DUCKSAFE_NOW", "2025-08-18T10:05:00Z")])?;
            backed_up(&conf_a, &[("DUCKSAFE_NOW", "2025-08-18T10:06:00Z")])?;
            for id in &foreign {
                ensure(a_bk.join(format!("{id}.duckdb")).exists(), || {
                    format!("rotation deleted another database's backup {id}")
                })?;
            }
            ensure(backup_ids(&a_bk).len() == 3, || {
                format!("{:?}", backup_ids(&a_bk))
            })?;
            let out = finish(cli(&conf_a, &["verify", "--all"]), None);
            ensure(
                out.status.code() == Some(74)
                    && String::from_utf8_lossy(&out.stdout).contains("another database"),
                || format!("verify --all: {:?}", out.status.code()),
            )
        },
    );
}

/// The rollback of a pre_run whose database came from `DUCKSAFE_DB_PATH` acts on that database
/// when run as printed, whatever the environment then says.
fn rollback_carries_the_overrides(t: &mut Tally) {
    let mach = Machine::new();
    let config = mach.database("simulation.duckdb", "conf", 2, "backups", "");
    let configured = mach.path("simulation.duckdb");
    let run2 = mach.path("run2/simulation.duckdb");
    fs::create_dir_all(run2.parent().unwrap()).unwrap();
    ducksafe::demo::create_sized(&run2, 60, 90).unwrap();
    let run2_text = run2.display().to_string();
    let env = [("DUCKSAFE_DB_PATH", run2_text.as_str())];
    for (label, later_env) in [
        ("no override when run", vec![]),
        (
            "another override when run",
            vec![("DUCKSAFE_DB_PATH", configured.display().to_string())],
        ),
    ] {
        t.case(
            format!("rollback of an overridden DB_PATH, {label}"),
            || {
                let r = hook_at(&config, &request("pre_run", &config, ""), &env)?;
                ensure(r.exit_code == 0, || format!("{r:?}"))?;
                let rb = r.rollback.ok_or("no rollback")?;
                let made = r.backup.ok_or("no backup")?;
                let expected = fingerprints(Path::new(&made.path));
                let configured_before = sha256(&configured);
                // The command, as printed, from another folder.
                change_database(&run2, true, 3);
                let mut cmd = support::command(&rb.command[0]);
                cmd.args(&rb.command[1..]).current_dir(mach.path("run2"));
                cmd.env_remove("DUCKSAFE_CONFIG")
                    .env_remove("DUCKSAFE_FAILPOINT");
                cmd.env_remove("DUCKSAFE_DB_PATH");
                for (k, v) in &later_env {
                    cmd.env(k, v);
                }
                cli_ok(&finish(cmd, None))?;
                ensure(fingerprints(&run2) == expected, || {
                    "the command did not restore run2".into()
                })?;
                // The request, as printed.
                change_database(&run2, true, 4);
                let env_later: Vec<(&str, &str)> =
                    later_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let r = hook_at(&config, &rb.request.to_string(), &env_later)?;
                ensure(r.decision == Decision::Restored, || format!("{r:?}"))?;
                ensure(fingerprints(&run2) == expected, || {
                    "the request did not restore run2".into()
                })?;
                ensure(sha256(&configured) == configured_before, || {
                    "the configured database was touched".into()
                })
            },
        );
    }
}

/// A project folder moved on purpose: refused until `ducksafe adopt`, then as before.
fn a_moved_project_needs_adopt(t: &mut Tally) {
    let mach = Machine::new();
    let config = mach.database("proj1/simulation.duckdb", "p", 2, "backups", "");
    t.case(
        "a moved project is refused until `adopt`, then works",
        || {
            let (id, _) = backed_up(&config, &[])?;
            fs::rename(mach.path("proj1"), mach.path("proj2")).map_err(|e| e.to_string())?;
            let config = mach.path("proj2/simulation.yaml");
            let db = mach.path("proj2/simulation.duckdb");
            let old = mach.path("proj1/simulation.duckdb").display().to_string();
            let r = hook_at(&config, &request("pre_run", &config, ""), &[])?;
            refused(&r, ErrorCode::BackupDirUnsafe, &[&old])?;
            cli_refused(&finish(cli(&config, &["restore"]), None), 73, &["adopt"])?;
            let owner = mach.path(&format!(
                "proj2/backups/{}",
                ducksafe::engine::identity::OWNER_FILE
            ));
            let before = sha256(&owner);
            let out = cli_ok(&finish(cli(&config, &["adopt", "--dry-run"]), None))?;
            ensure(
                out.contains("would make") && sha256(&owner) == before,
                || out,
            )?;
            let out = cli_ok(&finish(cli(&config, &["adopt"]), None))?;
            ensure(out.contains(&old), || out.clone())?;
            let expected = fingerprints(&mach.path(&format!("proj2/backups/{id}.duckdb")));
            change_database(&db, true, 5);
            cli_ok(&finish(cli(&config, &["restore", &id]), None))?;
            ensure(fingerprints(&db) == expected, || "not restored".into())?;
            backed_up(&config, &[])?;
            let out = cli_ok(&finish(cli(&config, &["adopt"]), None))?;
            ensure(out.contains("nothing to do"), || out)
        },
    );
}

/// Issue 17, hole 2: `data/sim.duckdb` and `data/other.duckdb` in one folder. Another
/// database's backup never removes a staged copy of a restore in flight, nor a dead one's; the
/// database's own next command removes a dead one's.
fn cleanup_spares_other_databases_and_live_restores(t: &mut Tally) {
    let mach = Machine::new();
    let sim = mach.database("data/sim.duckdb", "sim", 2, "../bk-sim", "");
    let other = mach.database("data/other.duckdb", "other", 3, "../bk-other", "");
    let db = mach.path("data/sim.duckdb");
    for point in ["restore.staged", "restore.intent", "restore.quarantined"] {
        t.case(
            format!("another database's backup while a restore waits at `{point}`"),
            || {
                let (id, path) = backed_up(&sim, &[])?;
                backed_up(&other, &[])?;
                let expected = fingerprints(&path);
                change_database(&db, true, 6);
                let go = mach.path(&format!("go-{point}"));
                let run = paused(cli(&sim, &["restore", &id]), None, point, &go)?;
                let staged = staged_copies(&mach.path("data"));
                ensure(staged.len() == 1, || format!("staged copies: {staged:?}"))?;
                let r = hook_at(&other, &request("pre_run", &other, ""), &[])?;
                let kept = staged_copies(&mach.path("data")) == staged;
                let out = run.release();
                ensure(r.exit_code == 0, || format!("{r:?}"))?;
                ensure(kept, || {
                    "the other database's backup removed the staged copy".into()
                })?;
                cli_ok(&out)?;
                ensure(fingerprints(&db) == expected, || "not restored".into())?;
                ensure(staged_copies(&mach.path("data")).is_empty(), || {
                    "a staged copy stayed".into()
                })
            },
        );
    }
    t.case(
        "a dead restore's staged copy: kept by another database, removed by its own",
        || {
            let (id, _) = backed_up(&sim, &[])?;
            change_database(&db, false, 7);
            let kill = Kill::Abort("restore.staged");
            let out = run_killed(cli(&sim, &["restore", &id]), None, &kill);
            killed_where_meant(&kill, &out)?;
            let staged = staged_copies(&mach.path("data"));
            ensure(staged.len() == 1, || format!("{staged:?}"))?;
            backed_up(&other, &[])?;
            cli_ok(&finish(cli(&other, &["restore"]), None))?;
            ensure(staged_copies(&mach.path("data")) == staged, || {
                "another database's commands removed it".into()
            })?;
            let r = hook_at(&sim, &request("pre_run", &sim, ""), &[])?;
            ensure(r.exit_code == 0, || format!("{r:?}"))?;
            ensure(staged_copies(&mach.path("data")).is_empty(), || {
                "not removed".into()
            })?;
            ensure(
                r.warnings
                    .iter()
                    .any(|w| w.contains("removed the leftover")),
                || format!("{:?}", r.warnings),
            )
        },
    );
}

/// A restore that lost its staged copy (it was removed while the restore was interrupted) is
/// rolled back by the next command to the exact previous state, as its message says.
fn a_lost_staged_copy_is_rolled_back(t: &mut Tally) {
    for point in ["restore.intent", "restore.quarantined"] {
        t.case(
            format!("a restore interrupted at `{point}` whose staged copy was lost"),
            || {
                let p = Project::new("");
                let (r, _) = p.pre_run();
                let id = r.backup.ok_or("no backup")?.id;
                change_database(&p.db(), true, 8);
                let before = source_state(&p.db());
                let before_fp = fingerprints(&p.db());
                let kill = Kill::Abort(point);
                let out = run_killed(p.cmd(&["restore", &id]), None, &kill);
                killed_where_meant(&kill, &out)?;
                // The staged copy the interrupted restore needs: there is one, and it is lost.
                let staged = staged_copies(p.dir.path());
                ensure(staged.len() == 1, || format!("staged copies: {staged:?}"))?;
                fs::remove_file(p.path(&staged[0])).unwrap();
                let (r, code) = p.pre_run();
                ensure(code == 0, || format!("{r:?}"))?;
                ensure(r.warnings.iter().any(|w| w.contains("rolled back")), || {
                    format!("{:?}", r.warnings)
                })?;
                // The backup that pre_run took is of the previous state, WAL included.
                let made = r.backup.ok_or("no backup")?;
                ensure(fingerprints(Path::new(&made.path)) == before_fp, || {
                    "the next backup is not of the previous database".into()
                })?;
                ensure(source_state(&p.db()) == before, || {
                    format!("not the exact previous state: {:?}", source_state(&p.db()))
                })?;
                ensure(journals(&p).iter().all(|(_, s)| s != "prepared"), || {
                    format!("{:?}", journals(&p))
                })
            },
        );
    }
}

/// Issue 17, hole 3: a `DB_PATH` that is a symlink is refused by validate, pre_run, its dry
/// run, `restore --dry-run` and `restore` alike, with the same code, nothing changed.
fn a_symlinked_db_path_is_refused_everywhere(t: &mut Tally) {
    let p = Project::new("");
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    let id = r.backup.unwrap().id;
    fs::rename(p.db(), p.path("real.duckdb")).unwrap();
    std::os::unix::fs::symlink("real.duckdb", p.db()).unwrap();
    let before = support::every_byte(p.dir.path());
    let hooks = [
        ("validate", request("validate", &p.config(), "")),
        ("pre_run", request("pre_run", &p.config(), "")),
        (
            "pre_run dry_run",
            request("pre_run", &p.config(), r#","dry_run":true"#),
        ),
    ];
    for (what, req) in hooks {
        t.case(format!("symlinked DB_PATH: hook {what}"), || {
            let r = hook_at(&p.config(), &req, &[])?;
            refused(&r, ErrorCode::DatabaseInvalid, &["symlink", "DB_PATH"])?;
            ensure(support::every_byte(p.dir.path()) == before, || {
                "files changed".into()
            })
        });
    }
    for args in [
        &["restore", "--dry-run"][..],
        &["restore", id.as_str()],
        &["backup"],
    ] {
        t.case(
            format!("symlinked DB_PATH: ducksafe {}", args.join(" ")),
            || {
                cli_refused(&finish(p.cmd(args), None), 74, &["symlink", "DB_PATH"])?;
                ensure(support::every_byte(p.dir.path()) == before, || {
                    "files changed".into()
                })
            },
        );
    }
}

/// System folders that root owns (and so would pass every permission check) are refused for
/// `BACKUP_DIR` and `QUARANTINE_DIR` alike.
fn system_folders_are_refused(t: &mut Tally) {
    let p = Project::new("");
    let no_chmod = |r: &Response| {
        ensure(
            r.errors
                .iter()
                .all(|e| e.hint.as_deref().is_some_and(|h| !h.contains("chmod"))),
            || format!("a hint suggests changing a system folder: {:?}", r.errors),
        )
    };
    // System folders that root owns and so would pass every permission check: refused for
    // both keys, as the runbook says, with no chmod in the hint (`/` and `/home` exist on every
    // machine; nothing is written there since the refusal comes first).
    for (key, dir) in [
        ("DUCKSAFE_BACKUP_DIR", "/home"),
        ("DUCKSAFE_BACKUP_DIR", "/etc"),
        ("DUCKSAFE_QUARANTINE_DIR", "/home"),
        ("DUCKSAFE_QUARANTINE_DIR", "/"),
    ] {
        t.case(format!("{key}={dir}: validate and pre_run"), || {
            let env = [(key, dir)];
            let pointer = format!("/{}", key.trim_start_matches("DUCKSAFE_"));
            for req in [
                request("validate", &p.config(), ""),
                request("pre_run", &p.config(), ""),
            ] {
                let r = hook_at(&p.config(), &req, &env)?;
                refused(&r, ErrorCode::BackupDirUnsafe, &["system folder"])?;
                ensure(
                    r.errors[0].path.as_deref() == Some(pointer.as_str()),
                    || format!("{:?}", r.errors[0].path),
                )?;
                no_chmod(&r)?;
            }
            Ok(())
        });
    }
}

/// Issue 17, hole 4: `QUARANTINE_DIR=/tmp`. validate checks what a backup checks; the error
/// names the key at fault; no hint suggests changing a system folder.
fn quarantine_in_a_system_folder(t: &mut Tally) {
    // The project on /tmp's filesystem, so that /tmp is refused for what it is (a system
    // folder), not for being on another filesystem.
    let p = Project::new_in(Path::new("/tmp"), "");
    let (r, _) = p.pre_run();
    ensure(r.exit_code == 0, || format!("{r:?}")).unwrap();
    let no_chmod = |r: &Response| {
        ensure(
            r.errors.iter().all(|e| {
                e.hint
                    .as_deref()
                    .is_some_and(|h| !h.contains("chmod") && h.contains("system folder"))
            }),
            || format!("a hint suggests changing a system folder: {:?}", r.errors),
        )
    };
    let env = [("DUCKSAFE_QUARANTINE_DIR", "/tmp")];
    for (what, req) in [
        ("validate", request("validate", &p.config(), "")),
        ("pre_run", request("pre_run", &p.config(), "")),
        (
            "pre_run dry_run",
            request("pre_run", &p.config(), r#","dry_run":true"#),
        ),
    ] {
        t.case(format!("QUARANTINE_DIR=/tmp: {what}"), || {
            let r = hook_at(&p.config(), &req, &env)?;
            refused(
                &r,
                ErrorCode::BackupDirUnsafe,
                &["QUARANTINE_DIR", "`/tmp`"],
            )?;
            ensure(
                r.errors[0].path.as_deref() == Some("/QUARANTINE_DIR"),
                || format!("{:?}", r.errors[0].path),
            )?;
            no_chmod(&r)
        });
    }
    if fs::metadata("/var/tmp").is_ok_and(|m| m.permissions().mode() & 0o1002 == 0o1002) {
        t.case("BACKUP_DIR=/var/tmp: validate and pre_run", || {
            let env = [("DUCKSAFE_BACKUP_DIR", "/var/tmp")];
            for req in [
                request("validate", &p.config(), ""),
                request("pre_run", &p.config(), ""),
            ] {
                let r = hook_at(&p.config(), &req, &env)?;
                refused(&r, ErrorCode::BackupDirUnsafe, &["`/var/tmp`"])?;
                ensure(r.errors[0].path.as_deref() == Some("/BACKUP_DIR"), || {
                    format!("{:?}", r.errors[0].path)
                })?;
                no_chmod(&r)?;
            }
            Ok(())
        });
    } else {
        support::skip(
            "several_databases_on_one_machine (BACKUP_DIR=/var/tmp)",
            "/var/tmp is not a world-writable sticky folder here",
        );
    }
    // A private folder of the project's own that another user could write: the hint may
    // suggest chmod, naming that folder.
    t.case(
        "a world-writable QUARANTINE_DIR of the project's own",
        || {
            let q = p.path("q");
            fs::create_dir(&q).unwrap();
            set_mode(&q, 0o777);
            let r = hook_at(
                &p.config(),
                &request("validate", &p.config(), ""),
                &[("DUCKSAFE_QUARANTINE_DIR", "q")],
            )?;
            refused(&r, ErrorCode::BackupDirUnsafe, &["QUARANTINE_DIR"])?;
            let hint = r.errors[0].hint.clone().unwrap_or_default();
            ensure(hint.contains(&format!("chmod 700 {}", q.display())), || {
                hint
            })
        },
    );
}

/// Issue 17, hole 5: backups on a read-only filesystem (a read-only tmpfs here) can be
/// restored, with and without a lock file there.
fn restore_from_read_only_media(t: &mut Tally) {
    if ducksafe::files::euid() != 0 {
        support::skip(
            "several_databases_on_one_machine (read-only media)",
            "not root: mounting a tmpfs needs root (CI runs it as root)",
        );
        t.detail("read-only media", "skipped: not root");
        return;
    }
    for with_lock_file in [true, false] {
        t.case(
            format!("restore from read-only media (lock file there: {with_lock_file})"),
            || {
                let fs_ = Tmpfs::mount(64 << 20)?;
                let p = project_on(&fs_, "");
                let (r, code) = p.pre_run();
                ensure(code == 0, || format!("{r:?}"))?;
                let made = r.backup.ok_or("no backup")?;
                let expected = fingerprints(Path::new(&made.path));
                let bk = fs_.path().join("backups");
                if !with_lock_file {
                    fs::remove_file(bk.join(ducksafe::engine::lock::DIR_LOCK_NAME)).unwrap();
                }
                change_database(&p.db(), true, 9);
                fs_.mount.remount_read_only()?;
                let before = support::every_byte(&bk);
                cli_ok(&finish(p.cmd(&["list"]), None))?;
                cli_ok(&finish(p.cmd(&["verify"]), None))?;
                let out = cli_ok(&finish(p.cmd(&["restore"]), None))?;
                ensure(fingerprints(&p.db()) == expected, || out.clone())?;
                ensure(!p.path("simulation.duckdb.wal").exists(), || {
                    "a WAL stayed".into()
                })?;
                ensure(support::every_byte(&bk) == before, || {
                    "the read-only media changed".into()
                })?;
                // validate says backups cannot go there, as the backup itself does: a
                // read-only filesystem (backup_failed, 73), with no chmod advice.
                let r = hook_at(&p.config(), &request("validate", &p.config(), ""), &[])?;
                refused(&r, ErrorCode::BackupFailed, &["read-only filesystem"])?;
                ensure(
                    r.errors
                        .iter()
                        .all(|e| e.hint.as_deref().is_some_and(|h| h.contains("no chmod"))),
                    || format!("a hint suggests a chmod on read-only media: {:?}", r.errors),
                )
            },
        );
    }
}

/// A backup directory written by an earlier ducksafe (no owner file, manifests without ids) that
/// holds two databases' backups is refused by the next backup, and by `adopt`; with the other
/// database's backups moved out, the next backup records the owner. A symlink planted at the
/// owner file is never followed; `adopt` replaces it.
fn directories_of_earlier_versions(t: &mut Tally) {
    let mach = Machine::new();
    let conf_a = mach.database("a/simulation.duckdb", "a", 3, "backups", "");
    let conf_b = mach.database("b/simulation.duckdb", "b", 5, "backups", "");
    let a_bk = mach.path("a/backups");
    let owner = a_bk.join(ducksafe::engine::identity::OWNER_FILE);
    let strip = |manifest: &Path| {
        let mut doc: Value = serde_json::from_slice(&fs::read(manifest).unwrap()).unwrap();
        doc["source"].as_object_mut().unwrap().remove("database_id");
        fs::write(manifest, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    };
    t.case(
        "an earlier version's directory holding two databases",
        || {
            let (a_id, _) = backed_up(&conf_a, &[("DUCKSAFE_NOW", "2025-08-18T10:00:00Z")])?;
            let (b_id, _) = backed_up(&conf_b, &[("DUCKSAFE_NOW", "2025-08-18T10:01:00Z")])?;
            fs::remove_file(&owner).map_err(|e| e.to_string())?;
            strip(&a_bk.join(format!("{a_id}.manifest.json")));
            for ext in ["duckdb", "duckdb.sha256", "manifest.json"] {
                fs::copy(
                    mach.path(&format!("b/backups/{b_id}.{ext}")),
                    a_bk.join(format!("{b_id}.{ext}")),
                )
                .map_err(|e| e.to_string())?;
            }
            strip(&a_bk.join(format!("{b_id}.manifest.json")));
            let b_db = mach.path("b/simulation.duckdb").display().to_string();
            // validate and the dry run refuse what the backup refuses.
            for req in [
                request("validate", &conf_a, ""),
                request("pre_run", &conf_a, r#","dry_run":true"#),
                request("pre_run", &conf_a, ""),
            ] {
                let r = hook_at(&conf_a, &req, &[])?;
                refused(&r, ErrorCode::BackupDirUnsafe, &[&b_db])?;
            }
            ensure(!owner.exists(), || {
                "a refused backup wrote the owner file".into()
            })?;
            cli_refused(&finish(cli(&conf_a, &["adopt"]), None), 73, &[&b_db])?;
            for ext in ["duckdb", "duckdb.sha256", "manifest.json"] {
                fs::remove_file(a_bk.join(format!("{b_id}.{ext}"))).map_err(|e| e.to_string())?;
            }
            backed_up(&conf_a, &[])?;
            ensure(owner.exists(), || {
                "the backup did not record the owner".into()
            })?;
            let out = cli_ok(&finish(cli(&conf_a, &["list", "--json"]), None))?;
            ensure(out.contains(&a_id), || {
                format!("the earlier backup is not listed: {out}")
            })
        },
    );
    t.case("a symlink planted at the owner file", || {
        let victim = mach.path("victim.json");
        fs::write(&victim, "keep me\n").unwrap();
        plant(&owner, &victim);
        let r = hook_at(&conf_a, &request("pre_run", &conf_a, ""), &[])?;
        // Not followed: the owner file cannot be read (no-follow), and the run stops there.
        refused(
            &r,
            ErrorCode::IoError,
            &[ducksafe::engine::identity::OWNER_FILE],
        )?;
        cli_ok(&finish(cli(&conf_a, &["adopt"]), None))?;
        ensure(fs::read_to_string(&victim).unwrap() == "keep me\n", || {
            "the victim changed".into()
        })?;
        ensure(
            !fs::symlink_metadata(&owner)
                .unwrap()
                .file_type()
                .is_symlink(),
            || "the link is still there".into(),
        )?;
        backed_up(&conf_a, &[]).map(drop)
    });
}

/// Issue 17, hole 6: a restore over a database that already is the backup says what happened;
/// a manifest's `file` field is never trusted.
fn smaller_promises(t: &mut Tally) {
    t.case("restore over a database that already is the backup", || {
        let p = Project::new("");
        let (r, _) = p.pre_run();
        let id = r.backup.ok_or("no backup")?.id;
        let out = cli_ok(&finish(p.cmd(&["restore", &id]), None))?;
        ensure(!out.contains("did not exist"), || out.clone())?;
        ensure(
            out.contains(&format!("already was backup `{id}` byte for byte")),
            || out,
        )
    });
    t.case("a manifest's `file` field is never trusted", || {
        let p = Project::new("");
        let (r, _) = p.pre_run();
        let id = r.backup.ok_or("no backup")?.id;
        let mpath = p.backups().join(format!("{id}.manifest.json"));
        let mut v: Value = serde_json::from_slice(&fs::read(&mpath).unwrap()).unwrap();
        v["file"] = json!("../../etc/passwd");
        fs::write(&mpath, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        change_database(&p.db(), false, 10);
        let out = cli_ok(&finish(p.cmd(&["restore", &id, "--json"]), None))?;
        let r: Response = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        let expected = p
            .backups()
            .join(format!("{id}.duckdb"))
            .display()
            .to_string();
        ensure(
            r.backup.as_ref().is_some_and(|b| b.path == expected),
            || format!("{:?}", r.backup),
        )?;
        let (r, _) = p.pre_run();
        let all = serde_json::to_string(&r).unwrap();
        ensure(!all.contains("passwd"), || all)
    });
}
