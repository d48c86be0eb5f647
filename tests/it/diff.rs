//! `ducksafe diff` and the post_run's summary of what a run changed, with the real binary on
//! real DuckDB files: a simulated run (events inserted, salaries updated, a table rebuilt, one
//! dropped, one added, a column's type changed) reported exactly; `--rows` giving exactly the
//! rows that differ, matched on a primary key or as whole rows; the exit codes; a backup in the
//! block store; and the post_run's `changes`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use serde::Deserialize;

use crate::support::{self, assert_exit, assert_ok, request, Project};
use ducksafe::duck::{Db, Limits};

/// Runs SQL on a database, as the simulation would.
fn sql(db: &Path, statements: &str) {
    let d = Db::open_read_write(db, &Limits::default()).unwrap();
    d.execute_batch(statements).unwrap();
    d.close().unwrap();
}

/// The tables the demo lacks: a keyed `salaries`, a `scratch` table the run drops, a `report`
/// it rebuilds, and an `untouched` one it leaves alone.
const EXTRA: &str = "
    CREATE TABLE salaries (employee_id VARCHAR PRIMARY KEY, amount DECIMAL(12,2), grade INTEGER);
    INSERT INTO salaries SELECT employee_id, current_compensation, job_level FROM employees;
    CREATE TABLE scratch AS SELECT range AS i FROM range(10);
    CREATE TABLE report AS SELECT department, count(*) AS n FROM employees GROUP BY ALL;
    CREATE TABLE untouched AS SELECT range AS i, range * 2 AS j FROM range(1000);";

/// The simulated run: what the diff must report, and nothing else.
const RUN: &str = "
    INSERT INTO fct_yearly_events
        SELECT 'EVT-RUN-' || range, 'EMP000001', 'raise', 2026, DATE '2026-01-01', 1, 1, 1, 0.1, 's'
        FROM range(3);
    UPDATE salaries SET amount = amount + 1000 WHERE employee_id IN ('EMP000001', 'EMP000002');
    CREATE OR REPLACE TABLE report AS SELECT department, count(*) + 1 AS n FROM employees GROUP BY ALL;
    DROP TABLE scratch;
    CREATE TABLE audit AS SELECT 1 AS x;
    ALTER TABLE employees ALTER job_level TYPE BIGINT;";

fn project(extra: &str) -> Project {
    let p = Project::new(extra);
    sql(&p.db(), EXTRA);
    p
}

#[derive(Debug, Deserialize)]
struct Report {
    from: String,
    to: String,
    differ: bool,
    #[serde(default)]
    changes: Vec<Item>,
    unchanged_tables: Option<u64>,
    unchanged_views: Option<u64>,
    unchanged_others: Option<u64>,
    tables_scanned: Option<u64>,
    rows: Option<RowsPart>,
}

#[derive(Debug, Deserialize)]
struct Item {
    kind: String,
    name: String,
    change: String,
    #[serde(default)]
    columns: Vec<ColumnPair>,
    rows_before: Option<u64>,
    rows_after: Option<u64>,
    content_changed: Option<bool>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
struct ColumnPair {
    column: String,
    before: Option<String>,
    after: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RowsPart {
    table: String,
    columns: Vec<String>,
    key: Vec<String>,
    rows: Vec<Row>,
    more: bool,
}

#[derive(Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct Row {
    change: String,
    old: Option<Vec<Option<String>>>,
    new: Option<Vec<Option<String>>>,
}

/// `ducksafe --json diff ARGS`, expecting `code`.
#[track_caller]
fn diff(p: &Project, args: &[&str], code: i32) -> Report {
    let mut all = vec!["--json", "diff"];
    all.extend_from_slice(args);
    let out = p.run(&all);
    assert_exit(&out, code);
    parse(&out)
}

fn parse(out: &Output) -> Report {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a diff report ({e}): {}; stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            support::stderr(out)
        )
    })
}

/// Takes a backup; returns its id.
fn backup(p: &Project) -> String {
    let out = p.run(&["--json", "backup"]);
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["backup"]["id"].as_str().unwrap().to_owned()
}

/// name → (change, rows before, rows after).
fn by_name(r: &Report) -> BTreeMap<String, (String, Option<u64>, Option<u64>)> {
    r.changes
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                (c.change.clone(), c.rows_before, c.rows_after),
            )
        })
        .collect()
}

#[allow(clippy::unnecessary_wraps)]
fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

/// What [`RUN`] changed, as the diff of the backup before it against the database after it
/// must say: exactly these tables, nothing else.
fn assert_the_run(r: &Report) {
    let got = by_name(r);
    let want: BTreeMap<String, (String, Option<u64>, Option<u64>)> = [
        ("main.audit", ("added", None, Some(1))),
        ("main.employees", ("schema_changed", Some(300), Some(300))),
        (
            "main.fct_yearly_events",
            ("changed", Some(1500), Some(1503)),
        ),
        (
            "main.report",
            ("changed", got["main.report"].1, got["main.report"].1),
        ),
        ("main.salaries", ("changed", Some(300), Some(300))),
        ("main.scratch", ("dropped", Some(10), None)),
    ]
    .into_iter()
    .map(|(n, (c, b, a))| (n.to_owned(), (c.to_owned(), b, a)))
    .collect();
    assert_eq!(got, want, "{r:#?}");
    assert!(r.differ);
    let employees = r
        .changes
        .iter()
        .find(|c| c.name == "main.employees")
        .unwrap();
    assert_eq!(
        employees.columns,
        [ColumnPair {
            column: "job_level".into(),
            before: s("INTEGER"),
            after: s("BIGINT"),
        }]
    );
    let salaries = r
        .changes
        .iter()
        .find(|c| c.name == "main.salaries")
        .unwrap();
    assert_eq!(salaries.content_changed, Some(true));
    assert!(salaries.columns.is_empty());
    // fct_compensation_history and untouched, and the demo's view.
    assert_eq!((r.unchanged_tables, r.unchanged_views), (Some(2), Some(1)));
}

#[test]
fn diff_of_a_simulated_run_reports_exactly_its_changes() {
    let p = project("");
    let id = backup(&p);
    // Nothing happened yet: the same, exit 0, the backup's fingerprints from its manifest.
    let same = diff(&p, &[], 0);
    assert!(!same.differ && same.changes.is_empty(), "{same:#?}");
    assert_eq!(
        (same.from.as_str(), same.to.as_str()),
        (&*format!("backup {id}"), "current")
    );
    assert_eq!(same.unchanged_tables, Some(7));
    sql(&p.db(), RUN);
    let r = diff(&p, &[], 1);
    assert_the_run(&r);
    // The backup's side came from its manifest: only the live database's 7 tables were read.
    assert_eq!(r.tables_scanned, Some(7));
    // Named explicitly, by id and by `current`: the same answer.
    assert_the_run(&diff(&p, &[&id, "current"], 1));
    // The other way round: added and dropped swap.
    let back = by_name(&diff(&p, &["current", "latest"], 1));
    assert_eq!(back["main.audit"].0, "dropped");
    assert_eq!(back["main.scratch"].0, "added");
    // --all lists the unchanged ones too.
    let all = diff(&p, &["--all"], 1);
    let unchanged: Vec<&str> = all
        .changes
        .iter()
        .filter(|c| c.change == "unchanged")
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        unchanged,
        [
            "main.fct_compensation_history",
            "main.untouched",
            "main.v_active_headcount"
        ]
    );
    assert!(all.changes.iter().any(|c| c.kind == "view"));
    // For people: the column side by side and the count of what is not listed.
    let out = p.run(&["diff"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_exit(&out, 1);
    assert!(text.contains("job_level  INTEGER  BIGINT"), "{text}");
    assert!(text.contains("rows 1500 -> 1503"), "{text}");
    assert!(
        text.contains("2 tables and 1 view unchanged, not listed"),
        "{text}"
    );
    // A copy of the database, named by its path: the same as `current`.
    std::fs::copy(p.db(), p.path("copy.duckdb")).unwrap();
    let copy = diff(&p, &["current", "copy.duckdb"], 0);
    assert_eq!(copy.to, format!("file {}", "copy.duckdb"));
    // Where DuckDB may spill: a private folder beside the database, gone when the diff ends;
    // one a killed diff left (its process gone) is removed by the next, one of a live process
    // is not.
    let dead = p.path(".ducksafe-tmp-diff-spill-4194303-0-simulation.duckdb");
    let live = p.path(&format!(
        ".ducksafe-tmp-diff-spill-{}-0-simulation.duckdb",
        std::process::id()
    ));
    std::fs::create_dir(&dead).unwrap();
    std::fs::write(dead.join("duckdb_temp_block"), b"x").unwrap();
    std::fs::create_dir(&live).unwrap();
    diff(&p, &["--rows", "salaries"], 1);
    assert!(!dead.exists(), "the abandoned spill folder was removed");
    assert!(
        live.exists(),
        "a live process's spill folder was left alone"
    );
    std::fs::remove_dir(&live).unwrap();
    let spills: Vec<String> = support::dir_names(p.dir.path())
        .into_iter()
        .filter(|n| n.starts_with(".ducksafe-tmp") || n == ".tmp")
        .collect();
    assert!(spills.is_empty(), "{spills:?}");
    // A view redefined is a change of the view.
    sql(
        &p.db(),
        "CREATE OR REPLACE VIEW v_active_headcount AS SELECT 1 AS n;",
    );
    let v = diff(&p, &["copy.duckdb", "current"], 1);
    assert_eq!(by_name(&v)["main.v_active_headcount"].0, "changed");
}

/// `--rows`: the rows of `table` between the backup and the database.
fn rows(p: &Project, table: &str, extra: &[&str], code: i32) -> RowsPart {
    let mut args = vec!["--rows", table];
    args.extend_from_slice(extra);
    diff(p, &args, code).rows.unwrap()
}

#[test]
fn rows_are_exactly_those_that_differ_keyed_or_not() {
    let p = project("");
    backup(&p);
    sql(
        &p.db(),
        "UPDATE salaries SET amount = 1.50 WHERE employee_id = 'EMP000002';
         UPDATE salaries SET grade = NULL WHERE employee_id = 'EMP000007';
         DELETE FROM salaries WHERE employee_id = 'EMP000003';
         INSERT INTO salaries VALUES ('EMP999999', 10.00, 1);
         DELETE FROM fct_yearly_events WHERE event_id = 'EVT00000010';
         INSERT INTO fct_yearly_events
             SELECT 'EVT-RUN-' || range, 'EMP000001', 'raise', 2026, DATE '2026-01-01', 1, 1, 1, 0.1, 's'
             FROM range(2);
         INSERT INTO untouched VALUES (0, 0);",
    );
    // Keyed: matched on the primary key, ordered by it, old and new values of each.
    let keyed = rows(&p, "salaries", &[], 1);
    assert_eq!(keyed.key, ["employee_id"]);
    assert_eq!(keyed.columns, ["employee_id", "amount", "grade"]);
    let before = |id: &str| duckdb_row(&p.backups().join("latest.duckdb"), id);
    let (e2, e3, e7) = (
        before("EMP000002"),
        before("EMP000003"),
        before("EMP000007"),
    );
    let mut e2_new = e2.clone();
    e2_new[1] = s("1.50");
    let mut e7_new = e7.clone();
    e7_new[2] = None;
    let row = |c: &str, old: Option<Vec<Option<String>>>, new: Option<Vec<Option<String>>>| Row {
        change: c.into(),
        old,
        new,
    };
    assert_eq!(
        keyed.rows,
        [
            row("removed", Some(e3), None),
            row(
                "added",
                None,
                Some(vec![s("EMP999999"), s("10.00"), s("1")])
            ),
            row("changed", Some(e2), Some(e2_new)),
            row("changed", Some(e7), Some(e7_new)),
        ]
    );
    assert!(!keyed.more);
    // Whole rows (no key): the deleted event removed, the two new ones added, nothing else.
    let events = rows(&p, "fct_yearly_events", &[], 1);
    assert!(events.key.is_empty());
    let ids: Vec<(String, String)> = events
        .rows
        .iter()
        .map(|r| {
            let v = r.old.as_ref().or(r.new.as_ref()).unwrap();
            (r.change.clone(), v[0].clone().unwrap())
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("removed".into(), "EVT00000010".into()),
            ("added".into(), "EVT-RUN-0".into()),
            ("added".into(), "EVT-RUN-1".into()),
        ]
    );
    // A duplicate of an existing row is one row added: EXCEPT ALL counts them.
    let dup = rows(&p, "main.untouched", &[], 1);
    assert_eq!(dup.rows, [row("added", None, Some(vec![s("0"), s("0")]))]);
    // --limit: at most N of each change, and `more` says there were more.
    let limited = rows(&p, "fct_yearly_events", &["--limit", "1"], 1);
    assert_eq!(limited.rows.len(), 2, "one removed, one added");
    assert!(limited.more);
    // A table whose rows are the same: none, exit 0.
    let same = rows(&p, "fct_compensation_history", &[], 0);
    assert!(same.rows.is_empty() && !same.more);
    assert_eq!(same.table, "main.fct_compensation_history");
    // For people: a table with `-` old and `+` new lines.
    let out = p.run(&["diff", "--rows", "salaries"]);
    assert_exit(&out, 1);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("matched on the primary key (employee_id)"),
        "{text}"
    );
    assert!(text.contains("+ changed  EMP000002    1.50"), "{text}");
    assert!(text.contains("1 removed, 1 added, 2 changed"), "{text}");
}

/// One row of `salaries` in `db`, each value as DuckDB prints it.
fn duckdb_row(db: &Path, id: &str) -> Vec<Option<String>> {
    let conn = duckdb::Connection::open_with_flags(
        db,
        duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .unwrap(),
    )
    .unwrap();
    conn.query_row(
        "SELECT employee_id, amount::VARCHAR, grade::VARCHAR FROM salaries WHERE employee_id = ?",
        [id],
        |r| Ok(vec![r.get(0)?, r.get(1)?, r.get(2)?]),
    )
    .unwrap()
}

#[test]
fn a_column_whose_type_changed_is_compared_as_text() {
    let p = project("");
    backup(&p);
    sql(
        &p.db(),
        "ALTER TABLE salaries ALTER grade TYPE VARCHAR;
         UPDATE salaries SET grade = 'senior' WHERE employee_id = 'EMP000004';",
    );
    let r = rows(&p, "salaries", &[], 1);
    assert_eq!(r.rows.len(), 1, "{r:#?}");
    assert_eq!(r.rows[0].change, "changed");
    assert_eq!(r.rows[0].new.as_ref().unwrap()[2], s("senior"));
}

#[test]
fn exit_codes_say_same_different_not_found_and_busy() {
    let p = project("");
    // No backup yet: `latest` is not found.
    assert_exit(&p.run(&["diff"]), 66);
    backup(&p);
    assert_ok(&p.run(&["diff"]));
    sql(&p.db(), "DELETE FROM untouched WHERE i = 1;");
    assert_exit(&p.run(&["diff"]), 1);
    let said = assert_exit(&p.run(&["diff", "no_such_backup"]), 66);
    assert!(said.contains("backup `no_such_backup` not found"), "{said}");
    let said = assert_exit(&p.run(&["diff", "latest", "./missing.duckdb"]), 66);
    assert!(
        said.contains("no file `./missing.duckdb` to compare"),
        "{said}"
    );
    let said = assert_exit(&p.run(&["diff", "--rows", "nope"]), 64);
    assert!(said.contains("no table `main.nope` in backup"), "{said}");
    // A file that is no database.
    std::fs::write(p.path("notes.duckdb"), vec![b'x'; 20_000]).unwrap();
    let said = assert_exit(&p.run(&["diff", "latest", "notes.duckdb"]), 74);
    assert!(said.contains("`notes.duckdb` cannot be compared"), "{said}");
    assert!(
        !said.contains("DB_PATH"),
        "a file to compare is not DB_PATH: {said}"
    );
    for bad in ["", "main.", ".salaries"] {
        let said = assert_exit(&p.run(&["diff", "--rows", bad]), 64);
        assert!(said.contains("`--rows` takes a table"), "{said}");
    }
    // A limit DuckDB cannot take is the command line's fault, never the database's.
    let said = assert_exit(
        &p.run(&[
            "diff",
            "--rows",
            "employees",
            "--limit",
            "9223372036854775808",
        ]),
        64,
    );
    assert!(!said.contains("not a usable DuckDB database"), "{said}");
    // A writer holds the database: busy, retry, and the JSON says so.
    let before = support::every_byte(&p.backups());
    let holder = support::hold(&p.db());
    let out = p.run(&["--json", "diff"]);
    let said = assert_exit(&out, 75);
    assert!(said.contains("is in use"), "{said}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"][0]["code"], "database_locked");
    assert_eq!(v["errors"][0]["retryable"], true);
    // Backups against each other need no lock on the database.
    assert_ok(&p.run(&["diff", "latest", "latest"]));
    drop(holder);
    assert_eq!(
        support::every_byte(&p.backups()),
        before,
        "diff wrote nothing"
    );
}

#[derive(Debug, Deserialize)]
struct Listed {
    backups: Vec<ListedBackup>,
}
#[derive(Debug, Deserialize)]
struct ListedBackup {
    id: String,
    storage: Option<String>,
}

#[test]
fn a_packed_backup_is_rebuilt_and_diffs_correctly() {
    let p = project("BACKUP_STORAGE: incremental\n");
    let older = backup(&p);
    sql(&p.db(), RUN);
    let newer = backup(&p);
    let out = p.run(&["--json", "list"]);
    assert_ok(&out);
    let listed: Listed = serde_json::from_slice(&out.stdout).unwrap();
    let storage = |id: &str| {
        listed
            .backups
            .iter()
            .find(|b| b.id == id)
            .and_then(|b| b.storage.clone())
    };
    assert_eq!(storage(&older).as_deref(), Some("packed"), "{listed:?}");
    assert_eq!(storage(&newer).as_deref(), Some("plain"));
    // A staged copy a killed diff left (no process holds it) goes before the rebuild.
    let left_behind = p.dir.path().join(format!(
        "{}4194303-diff0.duckdb",
        ducksafe::engine::staging::prefix(&p.db())
    ));
    std::fs::write(&left_behind, b"half a rebuild").unwrap();
    assert_the_run(&diff(&p, &[&older, &newer], 1));
    assert!(!left_behind.exists(), "the abandoned staged copy was swept");
    assert_the_run(&diff(&p, &[&older, "current"], 1));
    let r = rows(&p, "salaries", &[], 0);
    assert_eq!(r.rows.len(), 0, "the newest backup is the database: {r:#?}");
    let keyed = diff(&p, &[&older, "current", "--rows", "salaries"], 1)
        .rows
        .unwrap();
    assert_eq!(keyed.rows.len(), 2);
    // The rebuilt copy was staged beside the database and is gone.
    let left: Vec<String> = support::dir_names(p.dir.path())
        .into_iter()
        .filter(|n| n.starts_with(".ducksafe-tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A pack that is not what its name says: refused, as a restore refuses it.
    let packs = p.backups().join("packs");
    for name in support::dir_names(&packs) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(packs.join(&name))
            .unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"XXXXXXXX", 200).unwrap();
    }
    let said = assert_exit(&p.run(&["diff", &older]), 74);
    assert!(said.contains(&older), "{said}");
}

fn post_run(p: &Project, backup_id: &str) -> ducksafe::protocol::Response {
    let (r, code) = p.hook(&request(
        "post_run",
        &p.config(),
        &format!(r#","backup_id":"{backup_id}","run":{{"outcome":"success"}}"#),
    ));
    assert_eq!(code, 0, "{r:#?}");
    r
}

#[test]
fn post_run_says_what_the_run_changed() {
    let p = project("");
    let (pre, code) = p.pre_run();
    assert_eq!(code, 0, "{pre:#?}");
    let id = pre.backup.unwrap().id;
    sql(&p.db(), RUN);
    let r = post_run(&p, &id);
    let c = r.changes.expect("a summary");
    assert_eq!(c.against_backup, id);
    let got: Vec<(String, String, i64)> = c
        .tables
        .iter()
        .map(|t| {
            (
                t.table.clone(),
                serde_json::to_value(t.change)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned(),
                t.rows_delta,
            )
        })
        .collect();
    // The manifest records no columns: the retyped table's rows hash alike, so it is
    // unchanged here (the full `diff` shows its schema).
    assert_eq!(
        got,
        [
            ("main.audit".to_owned(), "added".to_owned(), 1),
            ("main.fct_yearly_events".into(), "changed".into(), 3),
            ("main.report".into(), "changed".into(), 0),
            ("main.salaries".into(), "changed".into(), 0),
            ("main.scratch".into(), "dropped".into(), -10),
        ]
    );
    assert_eq!((c.tables_changed, c.tables_unchanged), (5, 3));
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);

    // What cannot be summarised is a warning, never a failed post_run: a writer holds the
    // database, or the backup is gone.
    let (pre, _) = p.pre_run();
    let id = pre.backup.unwrap().id;
    let holder = support::hold(&p.db());
    let r = post_run(&p, &id);
    drop(holder);
    assert_eq!(r.status, ducksafe::protocol::Status::Ok);
    assert!(r.changes.is_none());
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("could not be summarised") && w.contains("in use")),
        "{:?}",
        r.warnings
    );
    let r = post_run(&p, "simulation_19990101_000000");
    assert!(r.changes.is_none());
    assert!(
        r.warnings.iter().any(|w| w.contains("not found")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn post_run_says_it_only_when_asked() {
    // No backup named and none taken yet: nothing to compare with, and nothing to warn about.
    let bare = project("");
    let (r, code) = bare.hook(&request(
        "post_run",
        &bare.config(),
        r#","run":{"outcome":"success"}"#,
    ));
    assert_eq!(code, 0, "{r:#?}");
    assert!(r.changes.is_none() && r.warnings.is_empty(), "{r:#?}");
    // Off by the key, or by the size: no summary.
    for extra in ["REPORT_CHANGES: false\n", "REPORT_CHANGES_MAX_BYTES: 1\n"] {
        let q = project(extra);
        let (pre, _) = q.pre_run();
        let r = post_run(&q, &pre.backup.unwrap().id);
        assert!(r.changes.is_none(), "{extra}: {r:#?}");
        assert!(r.warnings.is_empty());
    }
    // Forced on above the size.
    let q = project("REPORT_CHANGES: true\nREPORT_CHANGES_MAX_BYTES: 1\n");
    let (pre, _) = q.pre_run();
    let r = post_run(&q, &pre.backup.unwrap().id);
    assert_eq!(r.changes.unwrap().tables_changed, 0);
    // The same keys from the environment and from `--set`, as words and numbers.
    let (pre, _) = q.pre_run();
    let id = pre.backup.unwrap().id;
    let req = request(
        "post_run",
        &q.config(),
        &format!(r#","backup_id":"{id}","run":{{"outcome":"success"}}"#),
    );
    let (r, code) = q.hook_env(&req, &[("DUCKSAFE_REPORT_CHANGES", "off")]);
    assert_eq!(code, 0, "{r:#?}");
    assert!(r.changes.is_none());
    let (pre, _) = q.pre_run();
    let id = pre.backup.unwrap().id;
    let out = q.run(&[
        "post-run",
        "--outcome",
        "success",
        "--backup-id",
        &id,
        "--set",
        "REPORT_CHANGES=no",
    ]);
    assert!(support::one_response(&out).changes.is_none());
    let small = project("REPORT_CHANGES_MAX_BYTES: 1\n");
    let (pre, _) = small.pre_run();
    let id = pre.backup.unwrap().id;
    let (r, _) = small.hook_env(
        &request(
            "post_run",
            &small.config(),
            &format!(r#","backup_id":"{id}","run":{{"outcome":"success"}}"#),
        ),
        &[("DUCKSAFE_REPORT_CHANGES_MAX_BYTES", " 1000000000 ")],
    );
    assert!(r.changes.is_some(), "{r:#?}");
}

/// A packed backup is rebuilt beside the database: on a full disk, `insufficient_space` (73)
/// that says so, and nothing is left behind.
#[test]
fn a_packed_backup_on_a_full_disk_is_refused_and_leaves_nothing() {
    use crate::support::mount::{mounted, Mount};
    let root = tempfile::tempdir().unwrap();
    let Some(_fs) = mounted(
        "diff of a packed backup onto a full disk",
        Mount::tmpfs(root.path(), 64 << 20, 0o700),
    ) else {
        return;
    };
    let backups = tempfile::tempdir().unwrap();
    let p = Project::new_in(
        root.path(),
        &format!(
            "BACKUP_STORAGE: incremental\nBACKUP_DIR: {}\n",
            backups.path().join("b").display()
        ),
    );
    let older = backup(&p);
    sql(
        &p.db(),
        "DELETE FROM fct_yearly_events WHERE event_id < 'EVT00000100';",
    );
    backup(&p);
    let db_bytes = std::fs::metadata(p.db()).unwrap().len();
    let free = ducksafe::files::fs_space(p.dir.path())
        .unwrap()
        .available_bytes;
    std::fs::write(
        p.path("filler"),
        vec![0u8; usize::try_from(free - db_bytes / 2).unwrap()],
    )
    .unwrap();
    let before = support::dir_names(p.dir.path());
    let out = p.run(&["--json", "diff", &older]);
    assert_exit(&out, 73);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"][0]["code"], "insufficient_space");
    let message = v["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("cannot rebuild backup `{older}` to compare it")),
        "{message}"
    );
    assert!(v["errors"][0]["hint"]
        .as_str()
        .unwrap()
        .contains("beside the database"));
    assert_eq!(
        support::dir_names(p.dir.path()),
        before,
        "nothing left behind"
    );
    // With room again, the same diff works.
    std::fs::remove_file(p.path("filler")).unwrap();
    let r = diff(&p, &[&older], 1);
    assert_eq!(by_name(&r)["main.fct_yearly_events"].0, "changed");
}

/// Nested values DuckDB's `hash()` takes for one another, keyed and not: the row `k` before
/// the run, and what the run puts there.
const NESTED: &str = "
    CREATE TABLE nested (k INTEGER PRIMARY KEY, s STRUCT(x INTEGER), l INTEGER[], ll INTEGER[][]);
    INSERT INTO nested VALUES (1, {'x': NULL}, [1], [[1]]), (2, {'x': 2}, [NULL], [[2]]),
                              (3, {'x': 3}, [3], [[1], [2]]), (4, {'x': 4}, [4], [[4]]);
    CREATE TABLE Nested_Bag AS SELECT s, l, ll FROM nested;
    CREATE TABLE grows AS SELECT 1 AS i;";
const NESTED_RUN: &str = "
    UPDATE nested SET s = NULL WHERE k = 1;
    UPDATE nested SET l = [] WHERE k = 2;
    UPDATE nested SET ll = [[1, 2]] WHERE k = 3;
    CREATE OR REPLACE TABLE Nested_Bag AS SELECT s, l, ll FROM nested;
    ALTER TABLE grows ADD COLUMN l INTEGER[] DEFAULT [42];";

#[test]
fn changes_hash_cannot_see_are_reported_by_diff_rows_and_post_run() {
    let p = project("");
    sql(&p.db(), NESTED);
    let (pre, code) = p.pre_run();
    assert_eq!(code, 0, "{pre:#?}");
    let id = pre.backup.unwrap().id;
    sql(&p.db(), NESTED_RUN);

    let r = diff(&p, &[], 1);
    let got = by_name(&r);
    for t in ["main.nested", "main.Nested_Bag"] {
        assert_eq!(got[t], ("changed".into(), Some(4), Some(4)), "{t}: {r:#?}");
    }
    // Keyed: the three rows, old and new; `k = 4` is the same.
    let keyed = rows(&p, "nested", &[], 1);
    assert_eq!(keyed.key, ["k"]);
    let changed: Vec<_> = keyed.rows.iter().map(|r| r.change.as_str()).collect();
    assert_eq!(changed, ["changed"; 3], "{:#?}", keyed.rows);
    assert_eq!(keyed.rows[1].new.as_ref().unwrap()[2], s("[]"));
    // Whole rows, the name spelled as DuckDB would accept it (case-insensitive), as
    // `restore --table` does: three rows went, three came.
    let bag = rows(&p, "main.NESTED_BAG", &[], 1);
    assert_eq!(bag.table, "main.Nested_Bag");
    let mut kinds: Vec<_> = bag.rows.iter().map(|r| r.change.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["added", "added", "added", "removed", "removed", "removed"]
    );

    let c = post_run(&p, &id).changes.expect("a summary");
    let changed: Vec<&str> = c
        .tables
        .iter()
        .filter(|t| serde_json::to_value(t.change).unwrap() == "changed")
        .map(|t| t.table.as_str())
        .collect();
    // `grows` gained a nested column: changed, not unknown.
    assert_eq!(
        changed,
        ["main.Nested_Bag", "main.grows", "main.nested"],
        "{c:#?}"
    );
}

/// A manifest written before nested columns were hashed by structure: its fingerprint for a
/// nested table is not the one computed now, and says nothing of how it was made. It must be
/// compared with nothing: `verify` passes on row counts, `diff` reads the backup again, and a
/// table restore checks against a fingerprint computed from the backup.
#[test]
fn fingerprints_recorded_the_old_way_are_compared_with_nothing() {
    let p = project("");
    sql(&p.db(), NESTED);
    let id = backup(&p);
    let path = p
        .dir
        .path()
        .join("backups")
        .join(format!("{id}.manifest.json"));
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut aged = 0;
    for t in manifest["tables"].as_array_mut().unwrap() {
        let f = &mut t["fingerprint"];
        if f.get("nested") == Some(&serde_json::Value::Bool(true)) {
            let f = f.as_object_mut().unwrap();
            f.remove("nested");
            f.insert("sum_hash".into(), "12345".into());
            f.insert("xor_hash".into(), 12345.into());
            aged += 1;
        }
    }
    assert_eq!(aged, 2, "both nested tables say so: {manifest:#}");
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();

    let v = p.run(&["--json", "verify", &id]);
    assert_ok(&v);
    let said = String::from_utf8_lossy(&v.stdout);
    assert!(said.contains("row_counts"), "{said}");

    let same = diff(&p, &[], 0);
    assert!(!same.differ, "{same:#?}");
    // The database's tables, and the backup's two nested ones read again.
    assert_eq!(same.tables_scanned, same.unchanged_tables.map(|n| n + 2));

    // Nothing changed yet: the post_run's summary cannot say so of the nested tables (its
    // one scan is of the database), but it must not call them changed either.
    let c = post_run(&p, &id).changes.expect("a summary");
    for t in c
        .tables
        .iter()
        .filter(|t| t.table.to_lowercase().contains("nested"))
    {
        assert_eq!(serde_json::to_value(t.change).unwrap(), "unknown", "{c:#?}");
    }

    sql(&p.db(), NESTED_RUN);
    let out = p.run(&["--json", "restore", "--table", "nested", &id]);
    assert_ok(&out);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["tables"][0]["fingerprint_source"], "backup", "{r:#}");
    assert_eq!(r["tables"][0]["fingerprint_matches"], true, "{r:#}");
    assert!(rows(&p, "nested", &[&id], 0).rows.is_empty());
}

#[test]
fn sequences_macros_and_indexes_are_compared_by_definition() {
    let p = project("");
    sql(
        &p.db(),
        "CREATE SEQUENCE ids START 1; CREATE MACRO bump(x) AS x + 1;
         CREATE MACRO typed(a INTEGER) AS a * 2;
         CREATE INDEX untouched_j ON untouched (j); CREATE INDEX untouched_i ON untouched (i);",
    );
    backup(&p);
    let same = diff(&p, &[], 0);
    assert_eq!(same.unchanged_others, Some(5), "{same:#?}");
    sql(
        &p.db(),
        "SELECT nextval('ids'); CREATE OR REPLACE MACRO bump(x) AS x + 2;
         DROP INDEX untouched_j; CREATE MACRO fresh() AS 1;
         CREATE OR REPLACE MACRO typed(a BIGINT) AS a * 2;",
    );
    let r = diff(&p, &[], 1);
    let got: BTreeMap<(String, String), String> = r
        .changes
        .iter()
        .map(|c| ((c.kind.clone(), c.name.clone()), c.change.clone()))
        .collect();
    let want: BTreeMap<(String, String), String> = [
        ("index", "main.untouched_j", "dropped"),
        ("macro", "main.bump", "changed"),
        ("macro", "main.fresh", "added"),
        ("macro", "main.typed", "changed"),
        ("sequence", "main.ids", "changed"),
    ]
    .into_iter()
    .map(|(k, n, c)| ((k.into(), n.into()), c.into()))
    .collect();
    assert_eq!(got, want, "{r:#?}");
    assert_eq!(r.unchanged_others, Some(1), "untouched_i");
    let text = String::from_utf8_lossy(&p.run(&["diff"]).stdout).into_owned();
    assert!(
        text.contains("sequence  main.ids") && text.contains("and 1 other object unchanged"),
        "{text}"
    );
}
