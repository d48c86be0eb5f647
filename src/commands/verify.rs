//! `ducksafe verify [ID | --all]`: re-checks stored backups (size and SHA-256 against the
//! manifest, a read-only open, a scan of every column, fingerprints against the manifest).
//! With `--all` it also reports files that do not belong: backups without a manifest, manifests
//! without a backup. Exit 74 when anything fails.

use std::io::{self, Write};

use serde::Serialize;

use super::{Access, Global};
use crate::cli::VerifyArgs;
use crate::config::VerifyLevel;
use crate::error::Error;
use crate::output::{self, Report};
use crate::protocol::ErrorEntry;

#[derive(Debug, Serialize)]
pub(crate) struct Checked {
    pub(crate) id: String,
    pub(crate) ok: bool,
    pub(crate) checks: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// One line per backup checked, for people: `ok` with the checks, or `FAILED` with why. The
/// local and the remote `verify` print the same.
pub(crate) fn checked_lines(out: &mut dyn Write, checked: &[Checked]) -> io::Result<()> {
    for c in checked {
        if c.ok {
            writeln!(out, "ok      {:<36} {}", c.id, c.checks.join(", "))?;
        } else {
            writeln!(
                out,
                "FAILED  {:<36} {}",
                c.id,
                c.error.as_deref().unwrap_or("")
            )?;
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct Problem {
    file: String,
    problem: String,
}

#[derive(Debug, Serialize)]
struct VerifyReport {
    ok: bool,
    backups: Vec<Checked>,
    problems: Vec<Problem>,
    /// What an operator must know besides (a publication cut short, a backup dated in the
    /// future): no failure.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

impl Report for VerifyReport {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        checked_lines(out, &self.backups)?;
        for p in &self.problems {
            writeln!(out, "PROBLEM {:<36} {}", p.file, p.problem)?;
        }
        if self.backups.is_empty() && self.problems.is_empty() {
            writeln!(out, "no backups to verify")?;
        }
        Ok(())
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn failure(&self) -> Option<(Vec<ErrorEntry>, i32)> {
        let e = Error::StoredBackupsFailed;
        (!self.ok).then(|| (e.entries(), e.exit_code()))
    }
}

pub fn run(g: &Global, a: &VerifyArgs) -> i32 {
    g.show_progress();
    let verified = (|| {
        let settings = g.settings()?;
        super::warn_pending(&settings);
        let opened = super::open_store(&settings, Access::Read)?;
        let store = &opened.store;
        let limits = crate::engine::database::limits(&settings);
        // The whole inventory for --all; one backup is resolved on its own (a packed one is
        // rebuilt from the others, so the inventory is read for it too).
        let everything = store.inventory()?;
        let inv = if a.all { Some(&everything) } else { None };
        let entries = match &inv {
            Some(inv) => inv.backups.clone(),
            None => vec![store.resolve(a.id.as_deref().unwrap_or("latest"))?],
        };
        let mut checked = Vec::new();
        for e in &entries {
            match store.verify_stored(&everything, e, VerifyLevel::Full, &limits) {
                Ok(checks) => checked.push(Checked {
                    id: e.id.clone(),
                    ok: true,
                    checks,
                    error: None,
                }),
                // Rotated away by a concurrent backup while we were verifying: not a failure.
                Err(_) if !store.still_listed(&e.id) => {}
                Err(err) => checked.push(Checked {
                    id: e.id.clone(),
                    ok: false,
                    checks: Vec::new(),
                    error: Some(err.to_string()),
                }),
            }
        }
        let mut problems = Vec::new();
        if let Some(inv) = &inv {
            for (name, why) in &inv.unmanaged {
                problems.push(Problem {
                    file: name.clone(),
                    problem: why.clone(),
                });
            }
            for id in &inv.incomplete {
                problems.push(Problem {
                    file: format!("{id}.manifest.json"),
                    problem: "manifest without its backup file (orphaned)".into(),
                });
            }
            // The block store itself: every pack whole, every chunk a packed backup lists held.
            for p in store.check_packs(inv)?.problems {
                problems.push(Problem {
                    file: crate::engine::blockstore::PACKS_DIR.to_owned(),
                    problem: p,
                });
            }
        }
        let ok = checked.iter().all(|c| c.ok) && problems.is_empty();
        let warnings = inv.as_ref().map_or_else(Vec::new, |inv| {
            store.inventory_warnings(inv, crate::clock::now())
        });
        Ok::<_, Error>(VerifyReport {
            ok,
            backups: checked,
            problems,
            warnings,
        })
    })();
    output::finish(g.json, verified.map_err(Into::into))
}
