//! `ducksafe verify [ID | --all]`: re-checks stored backups (size and SHA-256 against the
//! manifest, a read-only open, a scan of every column, fingerprints against the manifest).
//! With `--all` it also reports files that do not belong: backups without a manifest, manifests
//! without a backup. Exit 74 when anything fails.

use serde::Serialize;

use super::Global;
use crate::cli::VerifyArgs;
use crate::config::VerifyLevel;
use crate::engine::store::Store;
use crate::engine::verify;
use crate::error::Error;
use crate::protocol::ErrorCode;
use crate::report;

#[derive(Debug, Serialize)]
struct Checked {
    id: String,
    ok: bool,
    checks: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
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
}

pub fn run(g: &Global, a: &VerifyArgs) -> i32 {
    let result = (|| {
        let settings = super::load_settings(g)?;
        super::warn_pending(&settings);
        let store = Store::open(&settings.backup_dir, false)?;
        let owner = crate::engine::identity::check(store.dir(), &settings)?;
        let store = store.owned_by(owner);
        let limits = crate::engine::database::limits(&settings);
        // The whole inventory only for --all; one backup is resolved on its own.
        let inv = if a.all {
            Some(store.inventory()?)
        } else {
            None
        };
        let entries = match &inv {
            Some(inv) => inv.backups.clone(),
            None => vec![store.resolve(a.id.as_deref().unwrap_or("latest"))?],
        };
        let mut checked = Vec::new();
        for e in &entries {
            let path = store.backup_path(&e.id);
            match verify::stored(&path, &e.manifest, VerifyLevel::Full, &limits) {
                Ok(o) => checked.push(Checked {
                    id: e.id.clone(),
                    ok: true,
                    checks: o.checks,
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
        }
        let ok = checked.iter().all(|c| c.ok) && problems.is_empty();
        Ok::<_, Error>(VerifyReport {
            ok,
            backups: checked,
            problems,
        })
    })();
    let r = match result {
        Ok(r) => r,
        Err(e) => return super::fail(g, &e),
    };
    if g.json {
        report::print_json_pretty(&r);
    } else {
        for c in &r.backups {
            if c.ok {
                println!("ok      {:<36} {}", c.id, c.checks.join(", "));
            } else {
                println!("FAILED  {:<36} {}", c.id, c.error.as_deref().unwrap_or(""));
            }
        }
        for p in &r.problems {
            println!("PROBLEM {:<36} {}", p.file, p.problem);
        }
        if r.backups.is_empty() && r.problems.is_empty() {
            println!("no backups to verify");
        }
    }
    if r.ok {
        0
    } else {
        if !g.json {
            eprintln!("ducksafe: error: verification failed");
            eprintln!("  hint: do not restore a FAILED backup; see docs/runbook.md, section 'Verification failed'");
        }
        ErrorCode::VerificationFailed.exit_code()
    }
}
