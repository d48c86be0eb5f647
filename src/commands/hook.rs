//! `ducksafe hook`: protocol v1. Reads one JSON request on stdin and writes exactly one JSON
//! line on stdout, on every path: bad input, invalid configuration, I/O failure, and a panic
//! (caught, answered with `internal`). Logs go to stderr.
//!
//! [`handle`] serves the typed request; `pre-run` and `post-run` build one from flags and call
//! it too, so all three answer the same way.

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::Value;

use crate::config::{self, Source};
use crate::engine::{backup, restore};
use crate::error::Error;
use crate::protocol::{
    ConfigSource, Decision, Event, OnFailure, Outcome, Request, Response, MAX_REQUEST_BYTES,
    SUPPORTED_VERSIONS,
};
use crate::report::{self, Ctx};

/// Runs the hook on this process's stdin; returns the exit code.
pub fn run() -> i32 {
    let mut buf = Vec::new();
    let read = std::io::stdin()
        .lock()
        .take(MAX_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut buf);
    let response = match read {
        Ok(_) => answer(&buf),
        Err(e) => {
            let ctx = Ctx::new(generated_id(), None);
            ctx.fail(
                Decision::Abort,
                &Error::InvalidRequest(format!("cannot read stdin: {e}")),
            )
        }
    };
    emit(&response)
}

/// Prints the response line and returns its exit code.
pub fn emit(response: &Response) -> i32 {
    report::print_json_line(response);
    response.exit_code
}

/// Answers raw stdin bytes. Never panics: a panic inside is answered with `internal`.
pub fn answer(raw: &[u8]) -> Response {
    let fallback = Ctx::new(generated_id(), None);
    match catch_unwind(AssertUnwindSafe(|| answer_inner(raw))) {
        Ok(r) => r,
        Err(p) => internal(&fallback, p.as_ref()),
    }
}

fn internal(ctx: &Ctx, p: &(dyn std::any::Any + Send)) -> Response {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into());
    ctx.fail(Decision::Abort, &Error::Internal(what))
}

/// A request id for requests that bring none: time and PID, unique enough for logs.
pub fn generated_id() -> String {
    format!(
        "ducksafe-{}-{}",
        crate::clock::now().format("%Y%m%dT%H%M%S%.3fZ"),
        std::process::id()
    )
}

fn answer_inner(raw: &[u8]) -> Response {
    let ctx = Ctx::new(generated_id(), None);
    let invalid = |ctx: &Ctx, msg: String| ctx.fail(Decision::Abort, &Error::InvalidRequest(msg));
    if raw.len() > MAX_REQUEST_BYTES {
        return invalid(
            &ctx,
            format!("stdin is larger than {MAX_REQUEST_BYTES} bytes"),
        );
    }
    if raw.iter().all(u8::is_ascii_whitespace) {
        return invalid(&ctx, "stdin is empty: expected one JSON object".into());
    }
    let value: Value = match serde_json::from_slice(raw) {
        Ok(v) => v,
        Err(e) => return invalid(&ctx, format!("stdin is not valid JSON: {e}")),
    };
    let Some(obj) = value.as_object() else {
        return invalid(
            &ctx,
            "stdin must be one JSON object, e.g. {\"protocol_version\": 1, \"event\": \"pre_run\"}"
                .into(),
        );
    };
    let mut ctx = Ctx::new(
        obj.get("request_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.chars().count() <= 200)
            .map_or_else(generated_id, str::to_owned),
        obj.get("event").and_then(Value::as_str),
    );
    let decision = decision_on_error(obj.get("event").and_then(Value::as_str));

    if let Some(v) = obj.get("protocol_version") {
        if v.is_number() && v.as_u64() != Some(1) {
            let mut r = ctx.fail(decision, &Error::UnsupportedProtocol(v.to_string()));
            r.supported_versions = Some(SUPPORTED_VERSIONS.to_vec());
            return r;
        }
    }
    if let Some(Value::String(e)) = obj.get("event") {
        if !["pre_run", "post_run", "validate"].contains(&e.as_str()) {
            return ctx.fail(
                decision,
                &Error::UnsupportedEvent(e.chars().take(64).collect()),
            );
        }
    }
    let violations = request_violations(&value);
    if !violations.is_empty() {
        return ctx.fail(decision, &Error::RequestViolations(violations));
    }
    for k in obj.keys() {
        if !Request::KNOWN_FIELDS.contains(&k.as_str()) {
            ctx.warnings.push(format!(
                "unknown request field `{}` ignored",
                k.chars().take(64).collect::<String>()
            ));
        }
    }
    let request: Request = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(e) => {
            return ctx.fail(
                decision,
                &Error::InvalidRequest(format!("request does not fit protocol v1: {e}")),
            )
        }
    };
    handle(&request, ctx)
}

/// The decision a failure gets, by event.
fn decision_on_error(event: Option<&str>) -> Decision {
    match event {
        Some("post_run") => Decision::Skipped,
        Some("validate") => Decision::Invalid,
        _ => Decision::Abort,
    }
}

fn request_violations(v: &Value) -> Vec<String> {
    let Some(schema) = crate::schemas::by_name("request") else {
        return vec!["internal: no request schema".into()];
    };
    let Ok(validator) = jsonschema::validator_for(&schema) else {
        return vec!["internal: the request schema does not compile".into()];
    };
    validator
        .iter_errors(v)
        .map(|e| {
            let at = e.instance_path().as_str().to_owned();
            let msg = config::redact_text(&e.to_string());
            let msg: String = msg.chars().take(300).collect();
            if at.is_empty() {
                msg
            } else {
                format!("`{at}`: {msg}")
            }
        })
        .collect()
}

/// Serves a typed request. A post_run answer repeats the run it was told about, so that a
/// caller's saved response says whose exit code the caller's own exit code is.
fn handle(request: &Request, ctx: Ctx) -> Response {
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
    let set: Vec<(String, String)> = request
        .set
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some((k, _)) = set
        .iter()
        .find(|(k, _)| !config::KEYS.contains(&k.as_str()))
    {
        return ctx.fail(
            decision,
            &Error::InvalidRequest(format!(
                "`set`: unknown key `{}`; known keys: {}",
                k.chars().take(64).collect::<String>(),
                config::KEYS.join(", ")
            )),
        );
    }
    let source = match &request.config {
        Some(ConfigSource::Path { path }) => Source::File(path.into()),
        Some(ConfigSource::Inline { inline }) => match std::env::current_dir() {
            Ok(base) => Source::Inline {
                object: inline.clone(),
                base,
            },
            Err(e) => return ctx.fail(decision, &Error::io("read", std::path::Path::new("."), e)),
        },
        None => match super::source_for(None, &set) {
            Ok(s) => s,
            Err(e) => return ctx.fail(decision, &e),
        },
    };
    let settings = match config::load(&source, &|var: &str| super::lookup(&set, var)) {
        Ok(s) => s,
        Err(e) => return ctx.fail(decision, &e),
    };
    super::init_logging(settings.config.log_level.as_tracing());
    ctx.set_paths(&settings);
    let now = crate::clock::now();
    let mut response = match request.event {
        Event::Validate => validate(&ctx, &settings),
        Event::PreRun if request.dry_run => match backup::dry_run(&settings, now, true) {
            Ok(d) => report::backup_planned(&ctx, &d),
            Err(e) => ctx.fail(Decision::Abort, &e),
        },
        Event::PreRun => match backup::run(&settings, now, Some(&ctx.request_id), true) {
            Ok(o) => {
                tracing::info!("backup {} created and verified", o.manifest.id);
                report::backup_done(&ctx, &settings, &o)
            }
            Err(e) => {
                tracing::error!("{e}");
                ctx.fail(Decision::Abort, &e)
            }
        },
        Event::PostRun => {
            let response = post_run(request, ctx, &settings, now);
            if !request.dry_run && response.status == crate::protocol::Status::Ok {
                // The run this post_run reports on is over (kept or restored): the next guarded
                // run may start. A refused post_run changes nothing, the lease included: it
                // goes when its caller retries successfully, or stale when the caller exits.
                crate::engine::lease::release(&settings.backup_dir, request.backup_id.as_deref());
            }
            response
        }
    };
    // An interrupted restore that this request did not finish is said first, whatever the
    // event: the database may be the old file without its WAL.
    report::surface_pending(&mut response, &settings);
    response
}

fn validate(ctx: &Ctx, settings: &config::Settings) -> Response {
    let mut ctx = ctx.clone();
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
    if settings.backup_dir.exists() {
        let checked = crate::engine::store::Store::open(&settings.backup_dir, false)
            // The owner a backup would claim: claiming writes nothing.
            .and_then(|store| crate::engine::identity::claim(&store, settings))
            .and_then(|_| {
                if crate::files::writable(&settings.backup_dir) {
                    Ok(())
                } else {
                    Err(Error::BackupDirUnsafe {
                        dir: settings.backup_dir.clone(),
                        why: "it is not writable (read-only filesystem or permissions): backups would fail; restores from it still work".into(),
                    })
                }
            });
        if let Err(e) = checked {
            return ctx.fail(Decision::Invalid, &e);
        }
    } else {
        ctx.warnings.push(format!(
            "`{}` does not exist yet; the first backup creates it (0700)",
            settings.backup_dir.display()
        ));
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

fn post_run(
    request: &Request,
    mut ctx: Ctx,
    settings: &config::Settings,
    now: chrono::DateTime<chrono::Utc>,
) -> Response {
    let Some(run) = &request.run else {
        return ctx.fail(
            Decision::Skipped,
            &Error::InvalidRequest(
                "post_run needs `run`: {\"outcome\": \"success\" | \"failure\"}".into(),
            ),
        );
    };
    if run.outcome == Outcome::Success {
        return ctx.ok(
            Decision::Kept,
            "the run succeeded; the database was kept".into(),
        );
    }
    let restore_wanted = match request.on_failure {
        Some(OnFailure::Restore) => true,
        Some(OnFailure::Keep) => false,
        None => settings.config.restore_on_failure,
    };
    if !restore_wanted {
        let why = if request.on_failure.is_some() {
            "the request asked to keep it"
        } else {
            "RESTORE_ON_FAILURE is false"
        };
        return ctx.ok(
            Decision::Kept,
            format!("the run failed; the database was kept as the run left it ({why})"),
        );
    }
    let selector = if let Some(id) = &request.backup_id {
        id.clone()
    } else {
        ctx.warnings
            .push("no `backup_id` in the request: restoring `latest`".into());
        "latest".to_owned()
    };
    if request.dry_run {
        // The same refusals as the restore itself, nothing written.
        return match restore::dry_run(settings, &selector, request.backup_sha256.as_deref(), now) {
            Ok(plan) => ctx.ok(
                Decision::Skipped,
                format!(
                    "dry run: backup `{}` would be restored over `{}`; nothing was changed",
                    plan.backup_id,
                    plan.database.display()
                ),
            ),
            Err(e) => ctx.fail(Decision::Skipped, &e),
        };
    }
    match restore::run(settings, &selector, request.backup_sha256.as_deref(), now) {
        Ok((manifest, outcome, notes)) => {
            ctx.warnings.extend(notes);
            report::restore_done(&ctx, settings, &manifest, &outcome)
        }
        Err(e) => {
            tracing::error!("{e}");
            let mut r = ctx.fail(Decision::RestoreFailed, &e);
            r.reason = format!("restore failed: {e}");
            r
        }
    }
}

/// The request the flag forms (`pre-run`, `post-run`, `validate`) stand for: `event` with the
/// configuration `--config` names; the caller sets the event's own fields.
pub fn flag_request(g: &super::Global, event: Event, request_id: Option<String>) -> Request {
    Request {
        protocol_version: 1,
        event,
        request_id,
        config: g.config.as_ref().map(|p| ConfigSource::Path {
            path: p.display().to_string(),
        }),
        set: (!g.set.is_empty()).then(|| g.set.iter().cloned().collect()),
        dry_run: false,
        backup_id: None,
        backup_sha256: None,
        run: None,
        on_failure: None,
    }
}

/// Serves a typed request built from flags (`pre-run`, `post-run`, `validate`), with the same
/// panic guard as stdin requests: a panic is answered with `internal`, never a missing line.
pub fn guarded(request: &Request) -> Response {
    let ctx = ctx_for(request);
    let fallback = ctx.clone();
    match catch_unwind(AssertUnwindSafe(|| handle(request, ctx))) {
        Ok(r) => r,
        Err(p) => internal(&fallback, p.as_ref()),
    }
}

/// A fresh context for a typed request.
fn ctx_for(request: &Request) -> Ctx {
    Ctx::new(
        request.request_id.clone().unwrap_or_else(generated_id),
        Some(request.event.as_str()),
    )
}
