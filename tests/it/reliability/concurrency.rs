//! Concurrency: eight hooks at once on one database and one backup directory.

use std::io::Write;
use std::process::{Child, Stdio};

use crate::support::cases::{ensure, scaled, Tally};
use crate::support::runs::one_line;
use crate::support::{request, write_into_wal, Project};

use ducksafe::engine::manifest::Manifest;
use ducksafe::engine::store::Store;
use ducksafe::protocol::{Decision, ErrorCode};

use super::{every_backup_is_complete, latest_is_verified, leftovers, names, source_state};

#[test]
fn concurrency_eight_hooks_at_once() {
    const KEEP: usize = 3;
    let mut t = Tally::new("concurrency_eight_hooks_at_once");
    let (mut proceeded, mut busy) = (0u64, 0u64);
    for batch in 0..scaled(2) {
        // A fresh project each batch: the first round also races to create the backup directory.
        let p = Project::new(&format!("BACKUP_KEEP_LAST: {KEEP}\n"));
        if batch % 2 == 1 {
            write_into_wal(
                &p.db(),
                "CREATE TABLE late AS SELECT range AS id FROM range(5000);",
            );
        }
        let source = source_state(&p.db());
        let req = request("pre_run", &p.config(), "");
        for round in 0..6 {
            let mut children: Vec<Child> = (0..8)
                .map(|_| {
                    p.cmd(&["hook"])
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                        .unwrap()
                })
                .collect();
            // Every process is up and waiting on stdin: release them together.
            let inputs: Vec<_> = children
                .iter_mut()
                .map(|c| c.stdin.take().unwrap())
                .collect();
            for mut i in inputs {
                i.write_all(req.as_bytes()).unwrap();
            }
            for (n, c) in children.into_iter().enumerate() {
                let out = c.wait_with_output().unwrap();
                t.case(format!("batch {batch}, round {round}, hook {n}"), || {
                    let r = one_line(&out.stdout, out.status)?;
                    match (r.exit_code, r.errors.first().map(|e| e.code)) {
                        (0, None) if r.decision == Decision::Proceed => {
                            proceeded += 1;
                            Ok(())
                        }
                        (75, Some(ErrorCode::LockBusy)) if r.errors[0].retryable => {
                            busy += 1;
                            Ok(())
                        }
                        _ => Err(format!("neither success nor lock_busy: {r:?}")),
                    }
                });
            }
        }
        t.case(
            format!("batch {batch}: the backup directory afterwards"),
            || {
                let dir = p.backups();
                let ids = every_backup_is_complete(&dir)?;
                ensure(ids.len() == KEEP, || {
                    format!("{} backups, BACKUP_KEEP_LAST is {KEEP}: {ids:?}", ids.len())
                })?;
                for n in names(&dir) {
                    if let Some(id) = n.strip_suffix(".manifest.json") {
                        let m = Manifest::read(&dir.join(&n)).map_err(|e| e.to_string())?;
                        ensure(m.id == id, || format!("{n} names {}", m.id))?;
                    }
                }
                let latest = latest_is_verified(&dir)?;
                let newest = Store::open(&dir, false)
                    .unwrap()
                    .inventory()
                    .unwrap()
                    .backups[0]
                    .id
                    .clone();
                ensure(latest == newest, || {
                    format!("latest is `{latest}`, the newest backup is `{newest}`")
                })?;
                ensure(leftovers(&dir).is_empty(), || {
                    format!("{:?}", leftovers(&dir))
                })?;
                ensure(source_state(&p.db()) == source, || {
                    "the source changed".into()
                })
            },
        );
    }
    t.detail("proceeded", proceeded);
    t.detail("lock_busy", busy);
    t.finish();
}
