//! Backup ids (issue 16): never issued twice, within one second or after the clock stepped
//! back; a rollback whose id came to name other content is refused.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::support::cases::{ensure, scaled, Tally};
use crate::support::{self, fingerprints, Project};

use ducksafe::protocol::{Decision, Response};

use super::source_state;

/// `ducksafe backup` at `now`: a backup that guards no run (no lease), as an operator's.
pub(super) fn backup_now(p: &Project, now: &str) {
    let out = p
        .cmd(&["backup"])
        .env("DUCKSAFE_NOW", now)
        .output()
        .unwrap();
    support::assert_ok(&out);
}

pub(super) fn pre_run_now(p: &Project, now: &str) -> Result<Response, String> {
    let (r, code) = p.pre_run_env(&[("DUCKSAFE_NOW", now)]);
    ensure(code == 0, || format!("pre_run at {now}: {:?}", r.errors))?;
    Ok(r)
}

#[test]
fn backup_ids_are_never_reused() {
    let mut t = Tally::new("backup_ids_are_never_reused");
    // Many backups within one second with BACKUP_KEEP_LAST: 1: rotation frees every name at
    // once, and none is issued twice.
    let p = Project::new("BACKUP_KEEP_LAST: 1\nVERIFY_LEVEL: quick\n");
    let mut seen = BTreeSet::new();
    let n = scaled(100);
    for i in 0..n {
        t.case(format!("backup {i} of {n} within one second"), || {
            let r = pre_run_now(&p, "2026-12-01T10:00:00Z")?;
            let id = r.backup.unwrap().id;
            ensure(seen.insert(id.clone()), || {
                format!("id `{id}` issued twice")
            })
        });
    }
    t.detail("distinct ids within one second", seen.len());

    // A clock that steps back to a second that was used before.
    let p = Project::new("BACKUP_KEEP_LAST: 1\nVERIFY_LEVEL: quick\n");
    let mut seen = BTreeSet::new();
    for (i, now) in [
        "2026-12-01T10:00:00Z",
        "2026-12-01T10:00:05Z",
        "2026-12-01T10:00:00Z",
        "2026-12-01T09:59:59Z",
        "2026-12-01T10:00:05Z",
        "2026-12-01T10:00:00Z",
    ]
    .iter()
    .enumerate()
    {
        t.case(format!("clock at {now} (step {i})"), || {
            let id = pre_run_now(&p, now)?.backup.unwrap().id;
            ensure(seen.insert(id.clone()), || {
                format!("id `{id}` reused after the clock stepped back")
            })
        });
    }

    // Defence in depth: the record of ids is lost, an id comes to name other content, and the
    // rollback request written for the first backup is refused, changing nothing.
    let p = Project::new("BACKUP_KEEP_LAST: 1\nVERIFY_LEVEL: quick\n");
    t.case("a post_run whose backup id now names other content", || {
        let first = pre_run_now(&p, "2026-12-01T11:00:00Z")?;
        let rollback = first.rollback.unwrap();
        pre_run_now(&p, "2026-12-01T11:00:01Z")?;
        fs::remove_file(p.backups().join(".ducksafe-ids")).map_err(|e| e.to_string())?;
        support::write_into_wal(&p.db(), "CREATE TABLE other_content AS SELECT 1 AS x;");
        let again = pre_run_now(&p, "2026-12-01T11:00:00Z")?.backup.unwrap();
        ensure(again.id == rollback.backup_id, || {
            format!("expected the id to be reused here, got `{}`", again.id)
        })?;
        let db_before = source_state(&p.db());
        let (r, code) = p.hook(&rollback.request.to_string());
        ensure(code == 74 && r.decision == Decision::RestoreFailed, || {
            format!("exit {code}: {:?}", r.errors)
        })?;
        ensure(
            r.errors[0]
                .message
                .contains("is not the backup this restore was asked for"),
            || r.errors[0].message.clone(),
        )?;
        ensure(source_state(&p.db()) == db_before, || {
            "the database changed".into()
        })?;
        // The command form refuses the same way.
        let out = support::command(&rollback.command[0])
            .args(&rollback.command[1..])
            .output()
            .map_err(|e| e.to_string())?;
        ensure(out.status.code() == Some(74), || {
            format!("restore command exit {:?}", out.status.code())
        })?;
        ensure(source_state(&p.db()) == db_before, || {
            "the database changed".into()
        })
    });
    t.case(
        "rollback.request sent back exactly as answered restores",
        || {
            let p = Project::new("VERIFY_LEVEL: quick\n");
            let r = pre_run_now(&p, "2026-12-01T12:00:00Z")?;
            let expected = fingerprints(Path::new(&r.backup.as_ref().unwrap().path));
            support::write_into_wal(&p.db(), "CREATE TABLE the_run AS SELECT 1 AS x;");
            let (back, code) = p.hook(&r.rollback.unwrap().request.to_string());
            ensure(code == 0 && back.decision == Decision::Restored, || {
                format!("exit {code}: {:?}", back.errors)
            })?;
            ensure(fingerprints(&p.db()) == expected, || {
                "the database is not the backup".into()
            })
        },
    );
    t.finish();
}
