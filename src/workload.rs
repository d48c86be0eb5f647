//! Simulated runs of the workload on a demo-shaped database (see [`crate::demo`]), for the
//! storage benchmark and the block store's tests: what one run of the simulation does to the
//! file, in the three shapes that decide how much of it changes from one backup to the next.
//!
//! Every run raises 10 % of salaries, rebuilds a snapshot table with `CREATE OR REPLACE`, and
//! rebuilds a small table the way dbt does (a temporary table, two renames, a drop), then
//! checkpoints. What it does to the events table depends on the [`Shape`].

use std::path::Path;

use crate::duck::{Db, Limits};
use crate::error::{Error, Result};

/// How a run touches the events table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Each run inserts the next year of events.
    Append,
    /// Each run deletes one year's events and inserts that year again, with other values (the
    /// same year re-run with changed assumptions).
    Rerun,
    /// Each run rebuilds the events table whole, with one more year (`CREATE OR REPLACE … AS
    /// SELECT * FROM … UNION ALL …`): the same rows land at other offsets of the file.
    Rebuild,
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::Append, Shape::Rerun, Shape::Rebuild];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Append => "append",
            Shape::Rerun => "rerun",
            Shape::Rebuild => "rebuild",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Shape::Append => "append",
            Shape::Rerun => "same year re-run",
            Shape::Rebuild => "events table rebuilt",
        }
    }
}

/// The tables a run rebuilds, added to a demo database once before the first run.
pub fn prepare_sql() -> &'static str {
    "CREATE TABLE IF NOT EXISTS fct_workforce_snapshot AS
       SELECT employee_id, department, job_level, current_compensation, employment_status,
              0 AS run
       FROM employees;
     CREATE TABLE IF NOT EXISTS int_department_summary AS
       SELECT department, count(*) AS headcount, avg(current_compensation) AS avg_comp
       FROM employees GROUP BY ALL;"
}

/// The SQL of run number `run` (1, 2, …) of `shape` on a demo database made for `employees`
/// employees and `events` events.
pub fn run_sql(shape: Shape, run: u32, employees: u32, events: u32) -> String {
    let per_year = events / 5;
    // Event ids continue after the demo's (append, rebuild) or restart at the re-run year's.
    let (year, first, seed) = match shape {
        Shape::Append | Shape::Rebuild => (2025 + run, events + (run - 1) * per_year + 1, 0),
        Shape::Rerun => (2026, events + 1, run),
    };
    let new_events = format!(
        "SELECT 'EVT' || lpad(e::VARCHAR, 8, '0') AS event_id,
                'EMP' || lpad((1 + hash(e, 'emp', {seed}) % {employees})::VARCHAR, 6, '0') AS employee_id,
                (['hire', 'promotion', 'raise', 'raise', 'termination', 'raise', 'promotion'])[1 + (hash(e, 'type', {seed}) % 7)::INTEGER] AS event_type,
                {year} AS simulation_year,
                DATE '{year}-01-01' + (hash(e, 'day', {seed}) % 365)::INTEGER AS effective_date,
                (45000 + (hash(e, 'comp', {seed}) % 160000))::DECIMAL(12, 2) AS compensation_amount,
                (42000 + (hash(e, 'prev', {seed}) % 150000))::DECIMAL(12, 2) AS previous_compensation,
                1 + (hash(e, 'lvl', {seed}) % 5)::INTEGER AS level_id,
                round((hash(e, 'pct', {seed}) % 1200) / 10000.0, 4) AS pct_change,
                'scenario_baseline' AS scenario_id
         FROM range({first}, {first} + {per_year}) AS t(e)"
    );
    let events_sql = match shape {
        Shape::Append => format!("INSERT INTO fct_yearly_events {new_events};"),
        Shape::Rerun => format!(
            "DELETE FROM fct_yearly_events WHERE simulation_year = {year};
             INSERT INTO fct_yearly_events {new_events};"
        ),
        Shape::Rebuild => format!(
            "CREATE OR REPLACE TABLE fct_yearly_events AS
               SELECT * FROM fct_yearly_events UNION ALL {new_events};"
        ),
    };
    format!(
        "{events_sql}
         UPDATE employees SET current_compensation = current_compensation * 1.10
           WHERE hash(employee_id, {run}) % 10 = 0;
         CREATE OR REPLACE TABLE fct_workforce_snapshot AS
           SELECT employee_id, department, job_level, current_compensation, employment_status,
                  {run} AS run
           FROM employees;
         CREATE TABLE int_department_summary__dbt_tmp AS
           SELECT department, count(*) AS headcount, avg(current_compensation) AS avg_comp
           FROM employees GROUP BY ALL;
         ALTER TABLE int_department_summary RENAME TO int_department_summary__dbt_backup;
         ALTER TABLE int_department_summary__dbt_tmp RENAME TO int_department_summary;
         DROP TABLE int_department_summary__dbt_backup;
         CHECKPOINT;"
    )
}

/// Runs run number `run` of `shape` on the demo database at `path` (made for `employees` and
/// `events`), preparing it first on run 1, and checkpoints it.
pub fn run(path: &Path, shape: Shape, run: u32, employees: u32, events: u32) -> Result<()> {
    let fail = |e: crate::duck::DuckError| Error::BackupFailed {
        path: path.to_path_buf(),
        why: format!("simulated run {run} failed: {e}"),
    };
    let db = Db::open_read_write(path, &Limits::default()).map_err(fail)?;
    if run == 1 {
        db.execute_batch(prepare_sql()).map_err(fail)?;
    }
    db.execute_batch(&run_sql(shape, run, employees, events))
        .map_err(fail)?;
    db.close().map_err(fail)
}
