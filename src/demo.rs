//! The demo database `ducksafe init --demo` creates: shaped like the seed's simulation (9,016
//! employees, 42,331 workforce events, their compensation history), deterministic (values come
//! from `hash` of the row number, so two demos are alike), written by the bundled DuckDB.

use std::path::Path;

use crate::duck::{Db, Limits};
use crate::error::{Error, Result};

/// Employees in the seed's simulation.
pub const EMPLOYEES: u32 = 9_016;
/// Workforce events in the seed's simulation.
pub const EVENTS: u32 = 42_331;

/// The DDL and data of the demo, for `employees` employees and `events` events.
pub fn sql(employees: u32, events: u32) -> String {
    format!(
        r"
CREATE TABLE employees AS
SELECT 'EMP' || lpad(i::VARCHAR, 6, '0') AS employee_id,
       DATE '2008-01-01' + (hash(i, 'hire') % 5800)::INTEGER AS hire_date,
       DATE '1958-01-01' + (hash(i, 'birth') % 15000)::INTEGER AS birth_date,
       (['Engineering', 'Finance', 'Operations', 'Sales', 'People', 'Legal'])[1 + (hash(i, 'dept') % 6)::INTEGER] AS department,
       1 + (hash(i, 'level') % 5)::INTEGER AS job_level,
       (48000 + (hash(i, 'salary') % 152000))::DECIMAL(12, 2) AS current_compensation,
       CASE WHEN hash(i, 'term') % 9 = 0 THEN 'terminated' ELSE 'active' END AS employment_status
FROM range(1, {employees} + 1) AS t(i);

CREATE TABLE fct_yearly_events AS
SELECT 'EVT' || lpad(e::VARCHAR, 8, '0') AS event_id,
       'EMP' || lpad((1 + hash(e, 'emp') % {employees})::VARCHAR, 6, '0') AS employee_id,
       (['hire', 'promotion', 'raise', 'raise', 'termination', 'raise', 'promotion'])[1 + (hash(e, 'type') % 7)::INTEGER] AS event_type,
       2021 + (hash(e, 'year') % 5)::INTEGER AS simulation_year,
       DATE '2021-01-01' + (hash(e, 'day') % 1825)::INTEGER AS effective_date,
       (45000 + (hash(e, 'comp') % 160000))::DECIMAL(12, 2) AS compensation_amount,
       (42000 + (hash(e, 'prev') % 150000))::DECIMAL(12, 2) AS previous_compensation,
       1 + (hash(e, 'lvl') % 5)::INTEGER AS level_id,
       round((hash(e, 'pct') % 1200) / 10000.0, 4) AS pct_change,
       'scenario_baseline' AS scenario_id
FROM range(1, {events} + 1) AS t(e);

CREATE TABLE fct_compensation_history AS
SELECT employee_id, y AS plan_year,
       (current_compensation * (1 - 0.03 * (2025 - y)))::DECIMAL(12, 2) AS annual_compensation,
       (current_compensation * 0.04)::DECIMAL(12, 2) AS employer_match
FROM employees, range(2021, 2026) AS r(y)
WHERE employment_status = 'active' OR y < 2024;

CREATE VIEW v_active_headcount AS
SELECT department, count(*) AS headcount FROM employees
WHERE employment_status = 'active' GROUP BY department;
"
    )
}

/// Creates the demo database at `path`. Refuses to touch an existing file.
pub fn create(path: &Path) -> Result<()> {
    create_sized(path, EMPLOYEES, EVENTS)
}

/// Creates a demo-shaped database of any size (benchmarks and tests).
pub fn create_sized(path: &Path, employees: u32, events: u32) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::Usage(format!(
            "`{}` already exists; ducksafe never overwrites a database",
            path.display()
        )));
    }
    let fail = |e: crate::duck::DuckError| Error::BackupFailed {
        path: path.to_path_buf(),
        why: format!("cannot create the demo database: {e}"),
    };
    let db = Db::open_read_write(path, &Limits::default()).map_err(fail)?;
    db.execute_batch(&sql(employees, events)).map_err(fail)?;
    db.execute_batch("CHECKPOINT").map_err(fail)?;
    db.close().map_err(fail)?;
    Ok(())
}
