//! Serving a typed request: its configuration, then the event's work. `pre_run` backs up (or
//! plans, on a dry run); `validate` checks what a backup would check, writing nothing;
//! `post_run` keeps the database or restores the pre-run backup, as [`after_run`] decides.
//! An interrupted restore of the database is said first among the warnings, whatever the event.

use chrono::{DateTime, Utc};

use super::request::{decision_on_error, set_pairs};
use super::response::{self, Ctx};
use crate::config::{self, Asked, Settings};
use crate::engine::{backup, diff, restore};
use crate::error::Error;
use crate::protocol::{ConfigSource, Decision, Event, OnFailure, Outcome, Request, Response};

/// Serves a typed request. A post_run answer repeats the run it was told about, so that a
/// caller's saved response says whose exit code the caller's own exit code is.
pub fn handle(request: &Request, ctx: Ctx) -> Response {
    let mut response = serve(request, ctx);
    if request.event == Event::PostRun {
        response.run.clone_from(&request.run);
    }
    response
}

fn serve(request: &Request, mut ctx: Ctx) -> Response {
    if ctx.event.is_none() {
        ctx.event = Some(request.event.as_str().to_owned());
    }
    let decision = decision_on_error(Some(request.event.as_str()));
    let set = match set_pairs(request) {
        Ok(set) => set,
        Err(e) => return ctx.fail(decision, &e),
    };
    let asked = match &request.config {
        Some(ConfigSource::Path { path }) => Asked::Path(path.into()),
        Some(ConfigSource::Inline { inline }) => Asked::Inline(inline.clone()),
        None => Asked::Nothing,
    };
    let settings = match config::load_asked(asked, &set) {
        Ok(s) => s,
        Err(e) => return ctx.fail(decision, &e),
    };
    crate::audit::located(&settings);
    crate::audit::dry_run(request.dry_run);
    crate::output::start_logging(settings.config.log_level.as_tracing());
    ctx.set_paths(&settings);
    let now = crate::clock::now();
    let mut response = match request.event {
        Event::Validate => validate(ctx, &settings),
        Event::PreRun if request.dry_run => match backup::dry_run(&settings, now, true) {
            Ok(d) => response::backup_planned(&ctx, &d),
            Err(e) => ctx.fail(Decision::Abort, &e),
        },
        Event::PreRun => match backup::run(&settings, now, Some(&ctx.request_id), true) {
            Ok(o) => {
                tracing::info!("backup {} created and verified", o.manifest.id);
                let mut response = response::backup_done(&ctx, &settings, &o);
                copy_off_machine(&mut response, &settings, &o.manifest.id);
                response
            }
            Err(refused) => {
                tracing::error!("{}", refused.error);
                response::backup_refused(&ctx, &refused)
            }
        },
        Event::PostRun => {
            let response = post_run(request, ctx, &settings, now);
            if !request.dry_run && response.status == crate::protocol::Status::Ok {
                // The run this post_run reports on is over (kept or restored): the next guarded
                // run may start. A refused post_run changes nothing, the lease included: it
                // goes when its caller retries successfully, or stale when the caller exits.
                crate::engine::lease::release(
                    &crate::engine::database::resolve(&settings.db_path),
                    &settings.backup_dir,
                    request.backup_id.as_deref(),
                );
            }
            response
        }
    };
    // An interrupted restore that this request did not finish is said first, whatever the
    // event: the database may be the old file without its WAL. A backup made leaves none to
    // say (it finished or refused every one, checked the marker and tightened both folders,
    // saying what it could not): the journals are not read a second time on that path.
    let backed_up = request.event == Event::PreRun
        && !request.dry_run
        && response.status == crate::protocol::Status::Ok;
    if !backed_up {
        response::surface_pending(&mut response, &settings);
    }
    response
}

/// With `REMOTE_URL`: uploads the backup just made (and aborts or deletes what an interrupted
/// upload left, then applies remote retention), and says so in the response. A failure is a
/// warning, or, with `REMOTE_REQUIRED: true`, an `abort` (the run's turn released: no run
/// follows). The local backup stays as it is either way.
fn copy_off_machine(response: &mut Response, settings: &Settings, id: &str) {
    let remote = match crate::remote::Remote::of(settings) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => return remote_failed(response, settings, id, false, &e),
    };
    response.warnings.extend(remote.warning.clone());
    match crate::commands::remote::push_backups(settings, &remote, Some(&[id.to_owned()])) {
        Ok(o) => {
            response.remote = o.uploaded.into_iter().next();
            for p in o.pruned.iter().filter(|p| p.outcome != "deleted") {
                response.warnings.push(if p.outcome == "kept" {
                    format!("remote backup `{}`: {}", p.id, p.reason)
                } else {
                    format!(
                        "remote backup `{}` is {} (Object Lock): {}",
                        p.id, p.outcome, p.reason
                    )
                });
            }
            response.warnings.extend(o.skipped);
            response.warnings.extend(o.problems);
        }
        Err(e) => remote_failed(response, settings, id, remote.required, &e),
    }
}

fn remote_failed(
    response: &mut Response,
    settings: &Settings,
    id: &str,
    required: bool,
    e: &Error,
) {
    tracing::error!("{e}");
    if !required {
        response.warnings.push(format!(
            "backup `{id}` was not copied off this machine: {e}; {}; the next run (or `ducksafe push`) catches up",
            e.hint().unwrap_or_default()
        ));
        return;
    }
    crate::engine::lease::release(
        &crate::engine::database::resolve(&settings.db_path),
        &settings.backup_dir,
        Some(id),
    );
    response.status = crate::protocol::Status::Error;
    response.decision = Decision::Abort;
    response.reason = format!(
        "backup {id} was created and verified here, but REMOTE_REQUIRED is true and it could not be copied off this machine: {e}"
    );
    response.rollback = None;
    response.errors = e.entries();
    response.exit_code = e.exit_code();
}

fn validate(mut ctx: Ctx, settings: &Settings) -> Response {
    if let Err(e) = crate::engine::database::check(settings) {
        return ctx.fail(Decision::Invalid, &e);
    }
    let limits = crate::engine::database::limits(settings);
    match crate::duck::Db::open_read_only(&settings.db_path, &limits) {
        Ok(db) => {
            let _ = db.close();
        }
        Err(crate::duck::DuckError::Locked { pid, holder }) => ctx.warnings.push(format!(
            "{}; a backup now would be refused with `database_locked`",
            Error::DatabaseLocked {
                path: settings.db_path.clone(),
                pid,
                holder
            }
        )),
        Err(e) => {
            return ctx.fail(
                Decision::Invalid,
                &Error::DatabaseInvalid {
                    path: settings.db_path.clone(),
                    why: e.to_string(),
                },
            )
        }
    }
    // What a backup checks before it writes, without writing: the backup directory is private
    // and writable and belongs to this database, the quarantine folder is private.
    if let Err(e) = crate::engine::quarantine::check(settings) {
        return ctx.fail(Decision::Invalid, &e);
    }
    match backup::check_dir(&settings.backup_dir) {
        // The owner a backup would claim: claiming writes nothing.
        Ok(backup::Dir::Exists(store)) => {
            if let Err(e) = crate::engine::identity::claim(&store, settings) {
                return ctx.fail(Decision::Invalid, &e);
            }
        }
        Ok(backup::Dir::Creatable { .. }) => ctx.warnings.push(format!(
            "`{}` does not exist yet; the first backup creates it (0700)",
            settings.backup_dir.display()
        )),
        Err(e) => return ctx.fail(Decision::Invalid, &e),
    }
    let pending = crate::engine::journal::pending(settings);
    let reason = match pending.first() {
        None => "configuration is valid and the database is readable".to_owned(),
        Some(p) => format!(
            "configuration is valid, but a restore of backup `{}` was interrupted and is unfinished (see the first warning): do not run on the database before `{}`",
            p.backup_id, p.finish
        ),
    };
    ctx.ok(Decision::Valid, reason)
}

/// What a post_run does about the run it reports on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterRun {
    /// Leave the database as the run left it, for this reason.
    Keep(String),
    /// Put the pre-run backup back.
    Restore,
}

/// A run that succeeded is kept; one that failed is restored when the request's `on_failure`
/// asks for it, or, without one, when `RESTORE_ON_FAILURE` does.
pub fn after_run(
    outcome: Outcome,
    on_failure: Option<OnFailure>,
    restore_on_failure: bool,
) -> AfterRun {
    if outcome == Outcome::Success {
        return AfterRun::Keep("the run succeeded; the database was kept".into());
    }
    match on_failure {
        Some(OnFailure::Restore) => AfterRun::Restore,
        None if restore_on_failure => AfterRun::Restore,
        Some(OnFailure::Keep) => AfterRun::Keep(
            "the run failed; the database was kept as the run left it (the request asked to keep it)"
                .into(),
        ),
        None => AfterRun::Keep(
            "the run failed; the database was kept as the run left it (RESTORE_ON_FAILURE is false)"
                .into(),
        ),
    }
}

fn post_run(request: &Request, mut ctx: Ctx, settings: &Settings, now: DateTime<Utc>) -> Response {
    let Some(run) = &request.run else {
        return ctx.fail(
            Decision::Skipped,
            &Error::InvalidRequest(
                "post_run needs `run`: {\"outcome\": \"success\" | \"failure\"}".into(),
            ),
        );
    };
    if let AfterRun::Keep(reason) = after_run(
        run.outcome,
        request.on_failure,
        settings.config.restore_on_failure,
    ) {
        let changes = report_changes(request, &mut ctx, settings);
        let mut r = ctx.ok(Decision::Kept, reason);
        r.changes = changes;
        return r;
    }
    let selector = if let Some(id) = &request.backup_id {
        id.clone()
    } else if let Some(id) = crate::engine::lease::recorded_backup(
        &crate::engine::database::resolve(&settings.db_path),
        &settings.backup_dir,
    ) {
        // Not `latest`: an operator's backup taken during the run would hold its half-done work.
        ctx.warnings.push(format!(
            "no `backup_id` in the request: restoring `{id}`, the backup the run's pre_run took (its record beside the database)"
        ));
        id
    } else {
        ctx.warnings.push(
            "no `backup_id` in the request and no record of the run's backup: restoring `latest`"
                .into(),
        );
        "latest".to_owned()
    };
    if request.dry_run {
        // The same refusals as the restore itself, nothing written.
        return match restore::dry_run(settings, &selector, request.backup_sha256.as_deref(), now) {
            Ok(o) if o.unchanged => ctx.ok(
                Decision::Skipped,
                format!(
                    "dry run: `{}` already is backup `{}` byte for byte, with no WAL beside it: the restore would move nothing; nothing was changed",
                    o.plan.database.display(),
                    o.plan.backup_id
                ),
            ),
            Ok(o) => ctx.ok(
                Decision::Skipped,
                format!(
                    "dry run: backup `{}` would be restored over `{}`; nothing was changed",
                    o.plan.backup_id,
                    o.plan.database.display()
                ),
            ),
            Err(e) => ctx.fail(Decision::Skipped, &e),
        };
    }
    match restore::run(settings, &selector, request.backup_sha256.as_deref(), now) {
        Ok((manifest, outcome, notes)) => {
            ctx.warnings.extend(notes);
            response::restore_done(&ctx, settings, &manifest, &outcome)
        }
        Err(e) => {
            tracing::error!("{e}");
            let mut r = ctx.fail(Decision::RestoreFailed, &e);
            r.reason = format!("restore failed: {e}");
            r
        }
    }
}

/// With `REPORT_CHANGES` (see [`diff::after_run`]): what the kept run changed, against the
/// backup its pre_run took (the request's `backup_id`, else the run's record, else `latest`).
/// Never fails the post_run: a summary that cannot be computed, even one that panics, is a
/// warning.
fn report_changes(
    request: &Request,
    ctx: &mut Ctx,
    settings: &Settings,
) -> Option<crate::protocol::ChangeSummary> {
    let named = request.backup_id.clone().or_else(|| {
        crate::engine::lease::recorded_backup(
            &crate::engine::database::resolve(&settings.db_path),
            &settings.backup_dir,
        )
    });
    let selector = named.clone().unwrap_or_else(|| "latest".to_owned());
    let computed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        diff::after_run(settings, &selector)
    }));
    match computed {
        Ok(Ok(summary)) => summary,
        // No run's backup named and none at all yet: nothing to compare with, nothing to say.
        Ok(Err(
            Error::NoBackupDir { .. } | Error::BackupNotFound { .. } | Error::DanglingLatest { .. },
        )) if named.is_none() => None,
        Ok(Err(e)) => {
            ctx.warnings.push(format!(
                "the run's changes could not be summarised against backup `{selector}` (the database was kept all the same): {e}"
            ));
            None
        }
        Err(_) => {
            ctx.warnings.push(format!(
                "the run's changes could not be summarised against backup `{selector}`: an internal error (the database was kept all the same)"
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_is_restored_only_when_asked() {
        use OnFailure::{Keep, Restore};
        use Outcome::{Failure, Success};
        let restores = |o, on, cfg| after_run(o, on, cfg) == AfterRun::Restore;
        for (outcome, on_failure, config, restored) in [
            (Success, Some(Restore), true, false),
            (Success, None, true, false),
            (Failure, Some(Restore), false, true),
            (Failure, Some(Keep), true, false),
            (Failure, None, true, true),
            (Failure, None, false, false),
        ] {
            assert_eq!(
                restores(outcome, on_failure, config),
                restored,
                "{outcome:?} {on_failure:?} RESTORE_ON_FAILURE={config}"
            );
        }
    }
}
