//! Disk full: the backup directory on a small tmpfs (root), filled before the copy, midway
//! through the copy and the WAL copy, while DuckDB folds the WAL, and at every later step.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::support::cases::{ensure, soak_factor, Tally};
use crate::support::mount::Mount;
use crate::support::runs::{one_line, paused, Running};
use crate::support::{self, request, sha256, write_into_wal, Project};

use ducksafe::failpoint;
use ducksafe::protocol::{ErrorCode, Response, Status};

use super::{
    backup_ids, every_backup_is_complete, latest_is_verified, leftovers, names, source_state,
};

/// A size-limited tmpfs in a temporary folder of its own, unmounted on drop (before the folder
/// goes: the fields drop in order).
pub(super) struct Tmpfs {
    pub(super) mount: Mount,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    pub(super) fn mount(size: u64) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mount = Mount::tmpfs(dir.path(), size, 0o755)?;
        Ok(Tmpfs { mount, _dir: dir })
    }
    pub(super) fn path(&self) -> &Path {
        self.mount.path()
    }
    fn free(&self) -> u64 {
        ducksafe::files::fs_space(self.path())
            .unwrap()
            .available_bytes
    }
    /// Writes a filler file so that about `leave` bytes stay free.
    fn fill(&self, leave: u64) -> PathBuf {
        let path = self
            .path()
            .join(format!("filler-{}", names(self.path()).len()));
        let mut left = self.free().saturating_sub(leave);
        let mut f = fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 1 << 20];
        while left > 0 {
            let n = usize::try_from(left.min(chunk.len() as u64)).unwrap();
            if f.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        path
    }
    /// Removes every filler file.
    fn drain(&self) {
        for n in names(self.path()) {
            if n.starts_with("filler-") {
                fs::remove_file(self.path().join(n)).unwrap();
            }
        }
    }
}

/// Rounds up to whole 4 KiB pages, as tmpfs counts.
fn pages(n: u64) -> u64 {
    n.div_ceil(4096) * 4096
}

/// A disk-full failure must be clean: `insufficient_space` (exit 73), wherever the disk filled.
fn clean_space_error(r: &Response) -> Result<(), String> {
    ensure(r.status == Status::Error && !r.errors.is_empty(), || {
        format!("expected a failure, got {r:?}")
    })?;
    let e = &r.errors[0];
    // The protocol promises `insufficient_space` for a disk that fills during the write too,
    // wherever it fills (the copy, the WAL copy, DuckDB's fold, the manifest): never `io_error`.
    ensure(e.code == ErrorCode::InsufficientSpace, || {
        format!("expected insufficient_space, got {e:?}")
    })?;
    ensure(r.exit_code == 73 && !e.retryable, || {
        format!("exit {} for {:?}", r.exit_code, e.code)
    })
}

/// The backups that existed before a disk-full failure are still there, byte for byte, and
/// verify; nothing partial sits under a backup name; nothing temporary is left.
fn earlier_backups_intact(dir: &Path, earlier: &BTreeMap<String, String>) -> Result<(), String> {
    for (id, sha) in earlier {
        let path = dir.join(format!("{id}.duckdb"));
        ensure(path.exists() && sha256(&path) == *sha, || {
            format!("the earlier backup `{id}` changed or vanished")
        })?;
    }
    every_backup_is_complete(dir)?;
    if !earlier.is_empty() {
        latest_is_verified(dir)?;
    }
    ensure(leftovers(dir).is_empty(), || {
        format!("partial or temporary files left: {:?}", leftovers(dir))
    })
}

fn backups_by_sha(dir: &Path) -> BTreeMap<String, String> {
    backup_ids(dir)
        .into_iter()
        .map(|id| {
            let sha = sha256(&dir.join(format!("{id}.duckdb")));
            (id, sha)
        })
        .collect()
}

/// A project whose backups go to `BACKUP_DIR` on the tmpfs.
pub(super) fn project_on(fs: &Tmpfs, extra: &str) -> Project {
    Project::new(&format!(
        "BACKUP_DIR: {}\n{extra}",
        fs.path().join("backups").display()
    ))
}

#[test]
fn disk_full() {
    let mut t = Tally::new("disk_full");
    if ducksafe::files::euid() != 0 {
        assert!(
            !support::in_ci(),
            "CI must run the disk-full scenario as root"
        );
        t.skip("not root: mounting a size-limited tmpfs for the backup directory needs root (CI runs it as root)");
        return;
    }
    if let Err(e) = Tmpfs::mount(1 << 20) {
        assert!(!support::in_ci(), "CI must be able to mount tmpfs: {e}");
        t.skip(&format!("cannot mount a tmpfs here: {e}"));
        return;
    }
    for _ in 0..soak_factor() {
        disk_full_before_the_copy(&mut t);
        disk_full_during_the_wal_copy(&mut t);
        disk_full_during_the_main_copy(&mut t);
        disk_full_at_every_later_step(&mut t);
    }
    t.finish();
}

/// The database is bigger than the free space, and earlier backups filled the disk: refused
/// before a byte is written.
fn disk_full_before_the_copy(t: &mut Tally) {
    let probe = Project::new("");
    let db_len = fs::metadata(probe.db()).unwrap().len();
    drop(probe);
    let fs1 = Tmpfs::mount(pages(db_len / 2)).unwrap();
    let p = project_on(&fs1, "");
    let source = source_state(&p.db());
    t.case("database bigger than the free space (hook)", || {
        let (r, _) = p.pre_run();
        clean_space_error(&r)?;
        ensure(r.errors[0].code == ErrorCode::InsufficientSpace, || {
            format!("{:?}", r.errors[0])
        })?;
        earlier_backups_intact(&fs1.path().join("backups"), &BTreeMap::new())?;
        ensure(backup_ids(&fs1.path().join("backups")).is_empty(), || {
            "a backup appeared".into()
        })?;
        ensure(source_state(&p.db()) == source, || {
            "the source changed".into()
        })
    });
    t.case(
        "database bigger than the free space (`ducksafe backup`)",
        || {
            let out = p.run(&["backup"]);
            ensure(out.status.code() == Some(73), || {
                format!("exit {:?}", out.status.code())
            })?;
            let err = String::from_utf8_lossy(&out.stderr);
            ensure(err.contains("not enough free space"), || err.to_string())?;
            earlier_backups_intact(&fs1.path().join("backups"), &BTreeMap::new())
        },
    );
    drop(p);
    drop(fs1);

    let fs2 = Tmpfs::mount(pages(2 * db_len + db_len / 2)).unwrap();
    let p = project_on(&fs2, "BACKUP_KEEP_LAST: 5\n");
    for _ in 0..2 {
        let (r, code) = p.pre_run();
        assert_eq!(code, 0, "the first two backups fit: {r:?}");
    }
    let earlier = backups_by_sha(&fs2.path().join("backups"));
    t.case(
        "earlier backups leave less than the database's size",
        || {
            let (r, _) = p.pre_run();
            clean_space_error(&r)?;
            earlier_backups_intact(&fs2.path().join("backups"), &earlier)?;
            let out = p.run(&["verify", "--all"]);
            ensure(out.status.success(), || {
                format!(
                    "verify --all after the refusal: {}",
                    String::from_utf8_lossy(&out.stdout)
                )
            })
        },
    );
}

/// The disk fills while the WAL is copied beside the temporary backup (a real partial write):
/// the failpoint after the main copy pauses the run while the test fills the disk.
fn disk_full_during_the_wal_copy(t: &mut Tally) {
    let fs = Tmpfs::mount(32 << 20).unwrap();
    let p = project_on(&fs, "BACKUP_KEEP_LAST: 1\n");
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    write_into_wal(
        &p.db(),
        // Inserts below DuckDB's row-group size go to the WAL (bigger ones go to the file).
        "CREATE TABLE wal_rows(id BIGINT, h UBIGINT, s VARCHAR); \
         INSERT INTO wal_rows SELECT range, hash(range), 'row ' || range FROM range(50000); \
         INSERT INTO wal_rows SELECT range, hash(range), 'row ' || range FROM range(50000);",
    );
    let wal_len = fs::metadata(p.path("simulation.duckdb.wal")).unwrap().len();
    assert!(
        wal_len > 256 << 10,
        "the WAL is big enough to fill midway: {wal_len}"
    );
    let source = source_state(&p.db());
    // Leave half the WAL free: the WAL copy stops midway. Leave the WAL and a little more: the
    // copy fits, and DuckDB runs out of room while it folds the WAL into the copy.
    for (label, leave) in [
        ("disk fills during the WAL copy", wal_len / 2),
        (
            "disk fills while DuckDB folds the WAL into the copy",
            pages(wal_len) + (64 << 10),
        ),
    ] {
        let earlier = backups_by_sha(&fs.path().join("backups"));
        t.case(label, || {
            let run = paused_pre_run(&p, "snapshot.copied")?;
            fs.fill(leave);
            let out = run.release();
            let r = one_line(&out.stdout, out.status)?;
            let result = clean_space_error(&r)
                .and_then(|()| earlier_backups_intact(&fs.path().join("backups"), &earlier))
                .and_then(|()| {
                    ensure(source_state(&p.db()) == source, || {
                        "the source changed".into()
                    })
                });
            fs.drain();
            result?;
            let (r, code) = p.pre_run();
            ensure(code == 0, || format!("the next run failed: {r:?}"))?;
            ensure(leftovers(&fs.path().join("backups")).is_empty(), || {
                format!("{:?}", leftovers(&fs.path().join("backups")))
            })
        });
    }
}

/// A pre_run paused at `point` until it is released ([`paused`]).
fn paused_pre_run(p: &Project, point: &str) -> Result<Running, String> {
    let go = p.path(&format!("go-{point}"));
    let input = request("pre_run", &p.config(), "");
    paused(p.cmd(&["hook"]), Some(input.as_bytes()), point, &go)
}

/// The disk fills while the main file is being copied: the run pauses at the failpoint after
/// the copy's first step (`snapshot.copying:wait=GO`), the test checks that the temporary file
/// is incomplete, fills the disk, and lets the run go on. No race: the moment is the run's own.
fn disk_full_during_the_main_copy(t: &mut Tally) {
    let fs = Tmpfs::mount(128 << 20).unwrap();
    let p = project_on(&fs, "BACKUP_KEEP_LAST: 1\n");
    fs::remove_file(p.db()).unwrap();
    ducksafe::demo::create_sized(&p.db(), 20_000, 500_000).unwrap();
    let db_len = fs::metadata(p.db()).unwrap().len();
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    let source = source_state(&p.db());
    let dir = fs.path().join("backups");
    for round in 0..2 {
        let earlier = backups_by_sha(&dir);
        t.case(
            format!("disk fills during the copy of the main file ({round})"),
            || {
                let run = paused_pre_run(&p, "snapshot.copying")?;
                let temp = names(&dir)
                    .into_iter()
                    .find(|n| n.starts_with(&format!("{}backup-", ducksafe::files::TEMP_PREFIX)));
                let partial = temp
                    .as_ref()
                    .map(|n| fs::metadata(dir.join(n)).map_or(0, |m| m.len()));
                fs.fill(0);
                let out = run.release();
                ensure(partial.is_some_and(|n| n < db_len), || {
                    format!("the copy was not midway: {partial:?} of {db_len} bytes")
                })?;
                let r = one_line(&out.stdout, out.status)?;
                let result = clean_space_error(&r)
                    .and_then(|()| {
                        ensure(r.errors[0].message.contains("copy database to"), || {
                            format!("not the copy that failed: {}", r.errors[0].message)
                        })
                    })
                    .and_then(|()| earlier_backups_intact(&dir, &earlier))
                    .and_then(|()| {
                        ensure(source_state(&p.db()) == source, || {
                            "the source changed".into()
                        })
                    });
                fs.drain();
                result?;
                let (r, code) = p.pre_run();
                ensure(code == 0, || format!("the next run failed: {r:?}"))
            },
        );
    }
}

/// The disk fills while the run is paused at each later step: the run either still succeeds
/// (nothing more needed room) or fails cleanly; nothing partial is published either way.
fn disk_full_at_every_later_step(t: &mut Tally) {
    let fs = Tmpfs::mount(16 << 20).unwrap();
    let p = project_on(&fs, "BACKUP_KEEP_LAST: 1\n");
    let (r, code) = p.pre_run();
    assert_eq!(code, 0, "{r:?}");
    let source = source_state(&p.db());
    let dir = fs.path().join("backups");
    // From the WAL's fold on (the copies were filled above).
    for point in failpoint::BACKUP
        .iter()
        .skip_while(|p| **p != "snapshot.folded")
    {
        if *point == "snapshot.folded" {
            continue;
        }
        let earlier = backups_by_sha(&dir);
        t.case(format!("disk fills while paused at `{point}`"), || {
            let run = paused_pre_run(&p, point)?;
            fs.fill(0);
            let out = run.release();
            let r = one_line(&out.stdout, out.status)?;
            let result = if r.exit_code == 0 {
                every_backup_is_complete(&dir)
                    .and_then(|_| latest_is_verified(&dir))
                    .map(|_| ())
            } else {
                clean_space_error(&r).and_then(|()| {
                    // Rotation may have run before the disk filled; what remains is intact.
                    let still: BTreeMap<String, String> = earlier
                        .iter()
                        .filter(|(id, _)| dir.join(format!("{id}.duckdb")).exists())
                        .map(|(a, b)| (a.clone(), b.clone()))
                        .collect();
                    earlier_backups_intact(&dir, &still)
                })
            }
            .and_then(|()| {
                ensure(source_state(&p.db()) == source, || {
                    "the source changed".into()
                })
            })
            .map_err(|e| {
                format!(
                    "{e} (the run answered {r:?}; the directory holds {:?})",
                    names(&dir)
                )
            });
            fs.drain();
            result?;
            let (r, code) = p.pre_run();
            ensure(code == 0, || format!("the next run failed: {r:?}"))?;
            ensure(leftovers(&dir).is_empty(), || {
                format!("{:?}", leftovers(&dir))
            })
        });
    }
}
