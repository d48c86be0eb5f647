//! `restore --table`: some tables put back into the live database in one transaction, after an
//! undo backup, on real DuckDB files; every refusal changes nothing.

use std::path::Path;

use serde::Deserialize;

use crate::support::{
    abort_at, assert_exit, assert_ok, but_the_lock, every_byte, fingerprints, hold, hold_reader,
    sha256, Project,
};
use ducksafe::duck::{Db, Fingerprint, Limits, TableName};

/// The typed report `restore --table --json` prints.
#[derive(Debug, Deserialize)]
struct Report {
    backup_id: String,
    dry_run: bool,
    tables: Vec<Table>,
    undo: Option<Undo>,
}

#[derive(Debug, Deserialize)]
#[allow(clippy::struct_field_names)] // the report's own field names
struct Table {
    table: String,
    method: String,
    rows_before: u64,
    rows_after: u64,
    schema_replaced: bool,
    fingerprint: Fingerprint,
    fingerprint_source: String,
    fingerprint_matches: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct Undo {
    backup_id: String,
    pinned: bool,
    command: String,
}

fn sql(db: &Path, sql: &str) {
    let d = Db::open_read_write(db, &Limits::default()).unwrap();
    d.execute_batch(sql).unwrap();
    d.close().unwrap();
}

/// Takes a backup; returns its id.
fn backup(p: &Project) -> String {
    let out = p.run(&["--json", "backup"]);
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["backup"]["id"].as_str().unwrap().to_owned()
}

fn report(out: &std::process::Output) -> Report {
    assert_ok(out);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not the report ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn table<'a>(fps: &'a [(String, Fingerprint)], name: &str) -> &'a Fingerprint {
    &fps.iter().find(|(n, _)| n == name).unwrap().1
}

fn manifest(p: &Project, id: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p.backups().join(format!("{id}.manifest.json"))).unwrap())
        .unwrap()
}

/// A bad run rewrote salaries; today's events must survive.
fn bad_run(p: &Project) {
    sql(
        &p.db(),
        "UPDATE employees SET current_compensation = 1;
         INSERT INTO fct_yearly_events SELECT * REPLACE ('NEW' || event_id AS event_id) FROM fct_yearly_events LIMIT 100;",
    );
}

#[test]
fn one_table_comes_back_while_another_tables_new_rows_survive_and_the_undo_undoes_it() {
    let p = Project::new("VERIFY_LEVEL: full\n");
    let id = backup(&p);
    let before = fingerprints(&p.backups().join(format!("{id}.duckdb")));
    bad_run(&p);
    let broken = fingerprints(&p.db());
    assert_ne!(
        table(&broken, "main.employees"),
        table(&before, "main.employees")
    );

    let r = report(&p.run(&["--json", "restore", "--table", "employees", &id]));
    assert_eq!(r.backup_id, id);
    assert!(!r.dry_run);
    let [t] = &r.tables[..] else { panic!("{r:?}") };
    assert_eq!(
        (t.table.as_str(), t.method.as_str(), t.schema_replaced),
        ("main.employees", "replace_rows", false)
    );
    assert_eq!((t.rows_before, t.rows_after), (300, 300));
    assert_eq!(&t.fingerprint, table(&before, "main.employees"));
    assert_eq!(
        t.fingerprint_source, "manifest",
        "VERIFY_LEVEL full records it"
    );
    assert_eq!(t.fingerprint_matches, Some(true));

    let after = fingerprints(&p.db());
    assert_eq!(
        table(&after, "main.employees"),
        table(&before, "main.employees"),
        "employees is the backup's again"
    );
    for other in ["main.fct_yearly_events", "main.fct_compensation_history"] {
        assert_eq!(
            table(&after, other),
            table(&broken, other),
            "{other} kept today's rows"
        );
    }
    assert_eq!(table(&after, "main.fct_yearly_events").rows, 1600);

    // The undo: a verified, pinned backup of the database as it was just before.
    let undo = r.undo.unwrap();
    assert!(undo.pinned);
    assert!(undo
        .command
        .contains(&format!("restore {}", undo.backup_id)));
    let m = manifest(&p, &undo.backup_id);
    assert_eq!(m["pinned"], true);
    assert!(m["verification"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "fingerprints"));
    assert_ok(&p.run(&["verify", &undo.backup_id]));
    assert_eq!(
        fingerprints(&p.backups().join(format!("{}.duckdb", undo.backup_id))),
        broken
    );
    // A guarded run's rotation keeps it: pinned.
    let out = p.run(&["--set", "BACKUP_KEEP_LAST=1", "backup"]);
    assert_ok(&out);
    assert!(p
        .backups()
        .join(format!("{}.duckdb", undo.backup_id))
        .exists());
    // Restoring it gives back the state before the table restore.
    assert_ok(&p.run(&["restore", &undo.backup_id]));
    assert_eq!(fingerprints(&p.db()), broken);
}

#[test]
fn the_text_output_names_the_undo_and_latest_is_the_default() {
    // `standard` records no fingerprints: the backup's is computed on the staged copy.
    let p = Project::new("VERIFY_LEVEL: standard\n");
    let id = backup(&p);
    bad_run(&p);
    // Any case, as DuckDB's names are: the catalog's spelling is reported.
    let out = p.run(&["restore", "--table", "MAIN.Employees"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "restored 1 table of `{}` from backup `{id}`",
            p.db().display()
        )),
        "{text}"
    );
    assert!(text.contains("to undo: "), "{text}");
    assert!(text.contains("  main.employees: 300 rows"), "{text}");
    assert!(
        text.contains("fingerprint equals the backup's (from its backup)"),
        "{text}"
    );
}

/// Every refusal: the exit code, words that say what to do, and not one byte changed anywhere
/// in the project (database, backups, folders).
fn assert_refused(p: &Project, args: &[&str], code: i32, says: &[&str]) {
    let before = every_byte(p.dir.path());
    let out = p.run(args);
    let text = assert_exit(&out, code);
    for s in says {
        assert!(text.contains(s), "{args:?}: `{s}` not in {text}");
    }
    assert_eq!(
        every_byte(p.dir.path()),
        before,
        "{args:?} changed something"
    );
}

#[test]
fn a_table_missing_from_the_backup_or_the_database_is_refused_changing_nothing() {
    let p = Project::new("");
    sql(&p.db(), "CREATE TABLE doomed AS SELECT 1 AS x;");
    backup(&p);
    sql(
        &p.db(),
        "DROP TABLE doomed; CREATE TABLE fresh AS SELECT 2 AS y;",
    );
    assert_refused(
        &p,
        &["restore", "--table", "fresh"],
        64,
        &["table `main.fresh` is not in backup", "hint: name a table"],
    );
    assert_refused(
        &p,
        &["restore", "--table", "doomed"],
        64,
        &[
            "table `main.doomed` is not in the database now",
            "restore the whole database",
        ],
    );
    // One bad name refuses the whole request: the good one is not restored either.
    assert_refused(
        &p,
        &["restore", "--table", "employees", "--table", "nope.x"],
        64,
        &["`nope.x` is not in backup"],
    );
    assert_refused(
        &p,
        &["restore", "--table", "a.b.c"],
        64,
        &["`--table a.b.c`"],
    );
}

#[test]
fn a_changed_definition_is_refused_unless_replace_schema() {
    let p = Project::new("");
    backup(&p);
    sql(
        &p.db(),
        "ALTER TABLE employees ADD COLUMN team VARCHAR DEFAULT 'core';",
    );
    assert_refused(
        &p,
        &["restore", "--table", "employees"],
        64,
        &[
            "column `team` is new (not in the backup)",
            "add `--replace-schema`",
        ],
    );
    // A view that reads the new column would break once the backup's definition is back.
    sql(&p.db(), "CREATE VIEW teams AS SELECT team FROM employees;");
    assert_refused(
        &p,
        &["restore", "--table", "employees", "--replace-schema"],
        64,
        &["view `main.teams` would break", "drop the view"],
    );
    // The dry run of the same says so too, and writes nothing either.
    assert_refused(
        &p,
        &[
            "restore",
            "--table",
            "employees",
            "--replace-schema",
            "--dry-run",
        ],
        64,
        &["view `main.teams` would break"],
    );
}

#[test]
fn replace_schema_recreates_the_table_with_its_constraints_defaults_indexes_and_comments() {
    let p = Project::new("");
    sql(
        &p.db(),
        "CREATE TABLE grades (id INTEGER PRIMARY KEY, label VARCHAR NOT NULL DEFAULT 'junior', pay INTEGER CHECK (pay > 0));
         INSERT INTO grades (id, pay) SELECT range, 10 + range FROM range(1, 51);
         CREATE UNIQUE INDEX grades_pay ON grades (pay);
         COMMENT ON TABLE grades IS 'pay grades, HR''s';
         COMMENT ON COLUMN grades.pay IS 'monthly';",
    );
    let id = backup(&p);
    let expected = {
        let d = Db::open_read_only(
            &p.backups().join(format!("{id}.duckdb")),
            &Limits::default(),
        )
        .unwrap();
        let t = TableName {
            schema: "main".into(),
            name: "grades".into(),
        };
        (
            d.table_schema(&t).unwrap().unwrap(),
            d.fingerprint(&t).unwrap(),
        )
    };
    // The run changed a type, dropped the check, changed the default and added a column.
    sql(
        &p.db(),
        "CREATE TABLE g2 AS SELECT id, label, pay::BIGINT AS pay, 'x' AS extra FROM grades;
         DROP TABLE grades; ALTER TABLE g2 RENAME TO grades; DELETE FROM grades WHERE id > 40;",
    );
    let r = report(&p.run(&["--json", "restore", "--table", "grades", "--replace-schema"]));
    assert_eq!(r.tables[0].method, "recreate");
    assert!(r.tables[0].schema_replaced);
    assert_eq!((r.tables[0].rows_before, r.tables[0].rows_after), (40, 50));

    let d = Db::open_read_write(&p.db(), &Limits::default()).unwrap();
    let t = TableName {
        schema: "main".into(),
        name: "grades".into(),
    };
    assert_eq!(d.table_schema(&t).unwrap().unwrap(), expected.0);
    assert_eq!(d.fingerprint(&t).unwrap(), expected.1);
    // The default, the constraints and the backup's index work again.
    assert_eq!(
        d.query_u64(
            "SELECT count(*) FROM duckdb_indexes() WHERE table_name = 'grades' AND index_name = 'grades_pay' AND is_unique"
        )
        .unwrap(),
        1,
        "the backup's unique index is recreated"
    );
    // And its comments.
    assert_eq!(
        d.query_u64(
            "SELECT count(*) FROM duckdb_tables() t JOIN duckdb_columns() c USING (table_name) \
             WHERE table_name = 'grades' AND t.comment = 'pay grades, HR''s' \
             AND c.column_name = 'pay' AND c.comment = 'monthly'"
        )
        .unwrap(),
        1,
        "the backup's table and column comments are kept"
    );
    d.execute_batch("INSERT INTO grades (id, pay) VALUES (100, 5)")
        .unwrap();
    assert_eq!(
        d.query_u64("SELECT count(*) FROM grades WHERE id = 100 AND label = 'junior'")
            .unwrap(),
        1
    );
    for bad in [
        "INSERT INTO grades (id, pay) VALUES (1, 5)",
        "INSERT INTO grades (id, pay) VALUES (101, -1)",
        "INSERT INTO grades (id, label, pay) VALUES (102, NULL, 1)",
        "INSERT INTO grades (id, pay) VALUES (103, 11)",
    ] {
        assert!(d.execute_batch(bad).is_err(), "{bad} was accepted");
    }
    d.close().unwrap();
}

/// Parents and children: `depts` is referenced by `staff`.
fn with_foreign_keys(p: &Project) -> String {
    sql(
        &p.db(),
        "CREATE TABLE depts (id INTEGER PRIMARY KEY, name VARCHAR);
         INSERT INTO depts VALUES (1, 'eng'), (2, 'ops'), (3, 'legal');
         CREATE TABLE staff (id INTEGER, dept INTEGER REFERENCES depts (id));
         INSERT INTO staff VALUES (10, 1), (11, 2);",
    );
    backup(p)
}

#[test]
fn foreign_keys_that_would_break_are_refused_changing_nothing() {
    let p = Project::new("");
    with_foreign_keys(&p);
    // Since the backup: a new department, staff moved into it; `ops` renamed.
    sql(
        &p.db(),
        "INSERT INTO depts VALUES (4, 'data');
         INSERT INTO staff VALUES (12, 4);
         UPDATE staff SET dept = 4 WHERE id = 10;",
    );
    // `depts` from the backup lacks row 4, which `staff` references now.
    assert_refused(
        &p,
        &["restore", "--table", "depts"],
        64,
        &[
            "2 rows of `main.staff` reference rows of `main.depts` that backup",
            "restore the whole database instead",
        ],
    );
    // `staff` from the backup is fine against today's `depts`: restored.
    let r = report(&p.run(&["--json", "restore", "--table", "staff"]));
    assert_eq!(r.tables[0].fingerprint_matches, Some(true));

    // Now the other way: the backup's `staff` references a department deleted since.
    let p = Project::new("");
    with_foreign_keys(&p);
    sql(
        &p.db(),
        "DELETE FROM staff WHERE dept = 2; DELETE FROM depts WHERE id = 2;",
    );
    assert_refused(
        &p,
        &["restore", "--table", "staff"],
        64,
        &[
            "1 rows of `main.staff` in backup",
            "also restore table `main.depts` (add `--table main.depts`)",
        ],
    );
    // As the hint says: both, in one transaction, referenced table first.
    let r = report(&p.run(&["--json", "restore", "--table", "staff", "--table", "depts"]));
    let names: Vec<&str> = r.tables.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(names, ["main.depts", "main.staff"]);
    assert_eq!(r.tables[0].method, "changed_rows");
    assert!(r.tables.iter().all(|t| t.fingerprint_matches == Some(true)));
}

#[test]
fn a_live_writer_or_reader_is_refused_with_database_locked_changing_nothing() {
    let p = Project::new("");
    backup(&p);
    let holder = hold(&p.db());
    assert_refused(
        &p,
        &["restore", "--table", "employees"],
        75,
        &["is in use", &format!("PID {}", holder.pid())],
    );
    drop(holder);
    // A reader too: the transaction will need the database to itself.
    let reader = hold_reader(&p.db());
    assert_refused(
        &p,
        &["restore", "--table", "employees"],
        75,
        &["is in use", &format!("PID {}", reader.pid())],
    );
    drop(reader);
}

#[test]
fn a_dry_run_says_what_would_happen_and_writes_nothing() {
    let p = Project::new("");
    let id = backup(&p);
    bad_run(&p);
    let before = every_byte(p.dir.path());
    let r = report(&p.run(&["--json", "restore", "--table", "employees", "--dry-run"]));
    assert!(r.dry_run && r.undo.is_none());
    assert_eq!(r.backup_id, id);
    assert_eq!(r.tables[0].fingerprint_matches, None);
    let out = p.run(&["restore", "--table", "employees", "--dry-run"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("dry run: would restore 1 table"), "{text}");
    assert_eq!(every_byte(p.dir.path()), before);
}

#[test]
fn a_crash_between_two_tables_leaves_the_database_unchanged() {
    let p = Project::new("");
    let id = backup(&p);
    bad_run(&p);
    sql(
        &p.db(),
        "DELETE FROM fct_compensation_history WHERE plan_year = 2021;",
    );
    let (bytes, fps) = (sha256(&p.db()), fingerprints(&p.db()));
    let c = p.cmd(&[
        "restore",
        "--table",
        "employees",
        "--table",
        "fct_compensation_history",
    ]);
    abort_at(c, "restore_table.inserted");
    // The first table's rows went in, uncommitted, when it died: nothing of them remains.
    assert_eq!(fingerprints(&p.db()), fps);
    assert_eq!(sha256(&p.db()), bytes, "the database file is as it was");
    // The next run restores both (and sweeps the crashed run's staged copy).
    let r = report(&p.run(&[
        "--json",
        "restore",
        "--table",
        "employees",
        "--table",
        "fct_compensation_history",
        &id,
    ]));
    assert!(r.tables.iter().all(|t| t.fingerprint_matches == Some(true)));
    assert!(!std::fs::read_dir(p.dir.path()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("tmp-restore")));
}

#[test]
fn a_backup_packed_in_the_block_store_is_rebuilt_and_restored() {
    let p = Project::new("BACKUP_STORAGE: incremental\n");
    let old = backup(&p);
    let before = fingerprints(&p.backups().join(format!("{old}.duckdb")));
    bad_run(&p);
    backup(&p);
    assert_eq!(
        manifest(&p, &old)["storage"],
        "packed",
        "the older one is packed"
    );
    assert!(!p.backups().join(format!("{old}.duckdb")).exists());
    let broken = fingerprints(&p.db());
    let r = report(&p.run(&["--json", "restore", "--table", "employees", &old]));
    assert_eq!(r.tables[0].fingerprint_matches, Some(true));
    let after = fingerprints(&p.db());
    assert_eq!(
        table(&after, "main.employees"),
        table(&before, "main.employees")
    );
    assert_eq!(
        table(&after, "main.fct_yearly_events"),
        table(&broken, "main.fct_yearly_events")
    );
}

/// The undo backup is published pinned, never named by `latest` and rotating nothing: with
/// `BACKUP_KEEP_LAST: 1`, the backup restored from survives it, `latest` still names it, and a
/// second table restore "from latest" takes its rows from it too.
#[test]
fn the_undo_backup_leaves_latest_and_the_retention_alone() {
    let p = Project::new("BACKUP_KEEP_LAST: 1\n");
    let id = backup(&p);
    let before = fingerprints(&p.backups().join(format!("{id}.duckdb")));
    bad_run(&p);
    let r = report(&p.run(&["--json", "restore", "--table", "employees"]));
    let undo = r.undo.unwrap().backup_id;
    assert_eq!(manifest(&p, &undo)["pinned"], true);
    let latest = std::fs::read_link(p.backups().join("latest.duckdb")).unwrap();
    assert!(latest.to_string_lossy().contains(&id), "{latest:?}");
    assert!(
        p.backups().join(format!("{id}.duckdb")).exists(),
        "the backup restored from was kept"
    );
    assert_ok(&p.run(&["restore", "--table", "fct_yearly_events"]));
    let after = fingerprints(&p.db());
    assert_eq!(
        table(&after, "main.fct_yearly_events"),
        table(&before, "main.fct_yearly_events")
    );
    // Named on purpose, the undo is a source like any other.
    assert_ok(&p.run(&["restore", "--table", "employees", &undo]));
}

/// The runbook's "A run broke one table" commands, verbatim (its example paths and id made the
/// project's): the dry run, then the restore of one table, which keeps the other's new rows.
#[test]
fn the_runbooks_table_restore_commands_work_as_written() {
    use crate::restore::{localize, run_sh, runbook_block, said};
    let p = Project::new("");
    let id = backup(&p);
    let before = fingerprints(&p.backups().join(format!("{id}.duckdb")));
    bad_run(&p);
    let broken = fingerprints(&p.db());
    let script = localize(&runbook_block("## A run broke one table", 0), &p, &id);
    assert!(script.contains("--dry-run"), "{script}");
    let out = run_sh(&p, &script);
    let text = said(&out);
    assert!(out.status.success(), "{text}");
    for line in [
        format!("dry run: would restore 1 table of `{}`", p.db().display()),
        format!(
            "restored 1 table of `{}` from backup `{id}`",
            p.db().display()
        ),
        "fingerprint equals the backup's".to_owned(),
        "to undo: ".to_owned(),
    ] {
        assert!(text.contains(&line), "`{line}` not in {text}");
    }
    let after = fingerprints(&p.db());
    assert_eq!(
        table(&after, "main.employees"),
        table(&before, "main.employees")
    );
    assert_eq!(
        table(&after, "main.fct_yearly_events"),
        table(&broken, "main.fct_yearly_events")
    );
}

/// A writer that opens the database between the undo backup and the transaction: `database
/// locked` (75), no table restored, and the undo (the database as it still is) unpinned, so
/// that retries do not pile up pinned copies; the output says both.
#[test]
fn a_writer_after_the_undo_backup_restores_nothing_and_unpins_the_undo() {
    use std::time::{Duration, Instant};
    let p = Project::new("");
    let id = backup(&p);
    bad_run(&p);
    let fps = fingerprints(&p.db());
    let go = p.path("go");
    let reached = p.path("go.reached");
    let mut cmd = p.cmd(&["--json", "restore", "--table", "employees", &id]);
    // The undo backup's last point: published, its lock on the database let go.
    cmd.env(
        "DUCKSAFE_FAILPOINT",
        format!("rotation.done:wait={}", go.display()),
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reached.exists() {
        assert!(Instant::now() < deadline, "rotation.done never reached");
        std::thread::sleep(Duration::from_millis(5));
    }
    let holder = hold(&p.db());
    std::fs::write(&go, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    drop(holder);
    let text = assert_exit(&out, 75);
    assert!(text.contains("no table was restored"), "{text}");
    assert!(text.contains("was unpinned"), "{text}");
    assert_eq!(fingerprints(&p.db()), fps, "nothing was restored");
    let undo = p
        .backup_files()
        .into_iter()
        .map(|f| f.trim_end_matches(".duckdb").to_owned())
        .find(|b| *b != id)
        .expect("the undo backup was taken");
    assert_eq!(manifest(&p, &undo)["pinned"], false);
}

/// The undo backup cannot be taken (no room): exit 73, no table restored, and the output says
/// so besides the backup's own error; nothing changed but the directory lock's PID.
#[test]
fn no_room_for_the_undo_backup_restores_nothing() {
    let p = Project::new("");
    let id = backup(&p);
    bad_run(&p);
    let before = but_the_lock(every_byte(p.dir.path()));
    let out = p.run(&[
        "--set",
        "BACKUP_MIN_FREE_BYTES=1000000000000000",
        "restore",
        "--table",
        "employees",
        &id,
    ]);
    let text = assert_exit(&out, 73);
    assert!(text.contains("not enough free space"), "{text}");
    assert!(
        text.contains("no table was restored: the undo backup"),
        "{text}"
    );
    assert_eq!(but_the_lock(every_byte(p.dir.path())), before);
}
