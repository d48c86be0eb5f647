//! `ducksafe diff [FROM] [TO] [--all] [--rows TABLE [--limit N]]`: what changed between two
//! states of the database (see [`crate::engine::diff`]). Per table and view: added, dropped,
//! schema changed (the columns side by side), changed (rows before and after); unchanged ones
//! counted, or listed with `--all`. `--rows TABLE` lists the rows of one table that differ.
//! Exit 0 when the states are the same, 1 when they differ (as `diff`), the error table's code
//! otherwise.

use std::io::{self, Write};

use serde::Serialize;

use super::Global;
use crate::cli::DiffArgs;
use crate::duck::{RowChange, RowDiff};
use crate::engine::diff::{self, Change, Selector};
use crate::error::{Error, EXIT_DIFFERENCES};
use crate::output::{self, Report};
use crate::protocol::{ChangeKind, ErrorEntry};

#[derive(Debug, Serialize)]
struct DiffReport {
    /// The older state, for people: `backup <id>`, `current`, `file <path>`.
    from: String,
    to: String,
    /// Whether the two states differ (in the tables and views compared, or in `--rows`' table).
    differ: bool,
    /// Tables and views that differ (every one with `--all`), tables first, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    changes: Option<Vec<Change>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unchanged_tables: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unchanged_views: Option<u64>,
    /// Sequences, macros and indexes unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    unchanged_others: Option<u64>,
    /// Tables whose fingerprint was computed by a scan (the others' came from a manifest).
    #[serde(skip_serializing_if = "Option::is_none")]
    tables_scanned: Option<usize>,
    /// `--rows TABLE`: the rows that differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<RowsReport>,
}

#[derive(Debug, Serialize)]
struct RowsReport {
    table: String,
    limit: u64,
    #[serde(flatten)]
    diff: RowDiff,
}

impl Report for DiffReport {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "from  {}", self.from)?;
        writeln!(out, "to    {}", self.to)?;
        if let Some(changes) = &self.changes {
            changes_text(out, changes)?;
            let (t, v, o) = (
                self.unchanged_tables.unwrap_or(0),
                self.unchanged_views.unwrap_or(0),
                self.unchanged_others.unwrap_or(0),
            );
            let listed = changes.iter().any(|c| c.change == ChangeKind::Unchanged);
            if !listed && t + v + o > 0 {
                writeln!(
                    out,
                    "\n{} unchanged, not listed (`--all` lists them)",
                    counted(t, v, o)
                )?;
            }
            if !self.differ {
                writeln!(out, "\nno differences: {} the same", counted(t, v, o))?;
            }
        }
        if let Some(r) = &self.rows {
            rows_text(out, r)?;
        }
        Ok(())
    }

    fn failure(&self) -> Option<(Vec<ErrorEntry>, i32)> {
        // Not an error: the answer, as `diff` gives it.
        self.differ.then(|| (Vec::new(), EXIT_DIFFERENCES))
    }
}

/// `3 tables, 1 view and 2 other objects` (sequences, macros, indexes); `0 tables` when
/// there is nothing.
fn counted(tables: u64, views: u64, others: u64) -> String {
    let plural = |n: u64, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let mut parts: Vec<String> = [(tables, "table"), (views, "view"), (others, "other object")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| plural(n, what))
        .collect();
    match parts.len() {
        0 => plural(0, "table"),
        1 => parts.remove(0),
        _ => {
            let last = parts.pop().unwrap_or_default();
            format!("{} and {last}", parts.join(", "))
        }
    }
}

fn kind_text(k: ChangeKind) -> &'static str {
    match k {
        ChangeKind::Added => "added",
        ChangeKind::Dropped => "dropped",
        ChangeKind::SchemaChanged => "schema changed",
        ChangeKind::Changed => "changed",
        ChangeKind::Unchanged => "unchanged",
        ChangeKind::Unknown => "unknown",
    }
}

fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

fn changes_text(out: &mut dyn Write, changes: &[Change]) -> io::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    let name_w = changes.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let kind_w = changes.iter().map(|c| c.kind.len()).max().unwrap_or(0);
    for c in changes {
        let rows = match (c.kind, c.change) {
            (k, _) if k != "table" => String::new(),
            (_, ChangeKind::Added) => format!("rows {}", opt(c.rows_after)),
            (_, ChangeKind::Dropped) => format!("rows {}", opt(c.rows_before)),
            _ => {
                let content = match (c.change, c.content_changed) {
                    (ChangeKind::SchemaChanged, Some(false)) => ", same rows",
                    (ChangeKind::SchemaChanged, Some(true)) => ", rows differ",
                    _ => "",
                };
                format!(
                    "rows {} -> {}{content}",
                    opt(c.rows_before),
                    opt(c.rows_after)
                )
            }
        };
        writeln!(
            out,
            "{:<kind_w$}  {:<name_w$}  {:<14}  {rows}",
            c.kind,
            c.name,
            kind_text(c.change)
        )?;
        if !c.columns.is_empty() {
            let col_w = c
                .columns
                .iter()
                .map(|x| x.column.len())
                .chain(["column".len()])
                .max()
                .unwrap_or(0);
            let before_w = c
                .columns
                .iter()
                .map(|x| x.before.as_deref().unwrap_or("-").len())
                .chain(["before".len()])
                .max()
                .unwrap_or(0);
            let pad = " ".repeat(7);
            writeln!(
                out,
                "{pad}{:<col_w$}  {:<before_w$}  after",
                "column", "before"
            )?;
            for x in &c.columns {
                writeln!(
                    out,
                    "{pad}{:<col_w$}  {:<before_w$}  {}",
                    x.column,
                    x.before.as_deref().unwrap_or("-"),
                    x.after.as_deref().unwrap_or("-")
                )?;
            }
        }
    }
    Ok(())
}

fn rows_text(out: &mut dyn Write, r: &RowsReport) -> io::Result<()> {
    let d = &r.diff;
    let count = |c: RowChange| d.rows.iter().filter(|x| x.change == c).count();
    let how = if d.key.is_empty() {
        "whole rows compared (no primary key): a changed row is one removed and one added"
            .to_owned()
    } else {
        format!("matched on the primary key ({})", d.key.join(", "))
    };
    writeln!(out, "\nrows of {} that differ, {how}", r.table)?;
    if d.rows.is_empty() {
        writeln!(out, "none: the rows are the same")?;
        return Ok(());
    }
    // One line per row state: `-` the old values, `+` the new ones.
    let mut lines: Vec<(String, Vec<String>)> = Vec::new();
    let cells = |v: &Option<Vec<Option<String>>>| -> Vec<String> {
        v.iter()
            .flatten()
            .map(|c| c.clone().unwrap_or_else(|| "NULL".into()))
            .collect()
    };
    for row in &d.rows {
        match row.change {
            RowChange::Removed => lines.push(("- removed".into(), cells(&row.old))),
            RowChange::Added => lines.push(("+ added".into(), cells(&row.new))),
            RowChange::Changed => {
                lines.push(("- changed".into(), cells(&row.old)));
                lines.push(("+ changed".into(), cells(&row.new)));
            }
        }
    }
    let mut widths: Vec<usize> = d.columns.iter().map(String::len).collect();
    for (_, vals) in &lines {
        for (w, v) in widths.iter_mut().zip(vals) {
            *w = (*w).max(v.chars().count());
        }
    }
    let render = |mark: &str, vals: &[String]| {
        let cols: Vec<String> = vals
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        format!("{mark:<9}  {}", cols.join("  "))
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", render("", &d.columns))?;
    for (mark, vals) in &lines {
        writeln!(out, "{}", render(mark, vals))?;
    }
    writeln!(
        out,
        "{} removed, {} added, {} changed{}",
        count(RowChange::Removed),
        count(RowChange::Added),
        count(RowChange::Changed),
        if d.more {
            format!(
                " shown; more rows differ (at most {} of each are shown: `--limit N`)",
                r.limit
            )
        } else {
            String::new()
        }
    )
}

pub fn run(g: &Global, a: &DiffArgs) -> i32 {
    g.show_progress();
    let done = (|| {
        let settings = g.settings()?;
        super::warn_pending(&settings);
        let selectors = [
            Selector::parse(&a.from, &settings),
            Selector::parse(&a.to, &settings),
        ];
        let stage = diff::staging_paths(&settings, 2);
        let opened = diff::open(&settings, &selectors, &stage)?;
        let sides: [diff::Side<'_>; 2] = opened
            .try_into()
            .map_err(|_| Error::Internal("two states were asked, not two opened".into()))?;
        let limits = crate::engine::database::limits(&settings);
        let at = diff::attach(&settings, &sides, &limits)?;
        let mut before = diff::read_catalog(&sides[0], &at.before)?;
        let mut after = diff::read_catalog(&sides[1], &at.after)?;
        let from = sides[0].label.clone();
        let to = sides[1].label.clone();
        if let Some(table) = &a.rows {
            // Case-insensitive, as DuckDB's names are, and as `restore --table` matches them.
            let table = diff::table_name(table)?
                .spelled_in(before.tables.keys().chain(after.tables.keys()));
            let rows = diff::rows(&sides, &at, &before, &after, &table, a.limit)?;
            return Ok::<_, Error>(DiffReport {
                from,
                to,
                differ: !rows.rows.is_empty(),
                changes: None,
                unchanged_tables: None,
                unchanged_views: None,
                unchanged_others: None,
                tables_scanned: None,
                rows: Some(RowsReport {
                    table: table.display(),
                    limit: a.limit,
                    diff: rows,
                }),
            });
        }
        let scanned = diff::fingerprints(&sides[0], &at.before, &mut before)?
            + diff::fingerprints(&sides[1], &at.after, &mut after)?;
        let all = diff::compare(&before, &after);
        let unchanged = |kind: &str| {
            all.iter()
                .filter(|c| c.kind == kind && c.change == ChangeKind::Unchanged)
                .count() as u64
        };
        let (unchanged_tables, unchanged_views) = (unchanged("table"), unchanged("view"));
        let unchanged_others = ["sequence", "macro", "index"].map(unchanged).iter().sum();
        let differ = all.iter().any(|c| c.change != ChangeKind::Unchanged);
        let changes: Vec<Change> = all
            .into_iter()
            .filter(|c| a.all || c.change != ChangeKind::Unchanged)
            .collect();
        Ok(DiffReport {
            from,
            to,
            differ,
            changes: Some(changes),
            unchanged_tables: Some(unchanged_tables),
            unchanged_views: Some(unchanged_views),
            unchanged_others: Some(unchanged_others),
            tables_scanned: Some(scanned),
            rows: None,
        })
    })();
    output::finish(g.json, done.map_err(Into::into))
}
