//! `ducksafe post-run`: the hook's `post_run` event from flags, for make and just. Answers the
//! same single JSON line, with the same exit codes, as `ducksafe hook`.

use super::hook::{emit, flag_request, guarded};
use super::Global;
use crate::cli::{OnFailureArg, OutcomeArg, PostRunArgs};
use crate::protocol::{Event, OnFailure, Outcome, Request, RunInfo};

pub fn run(g: &Global, a: &PostRunArgs) -> i32 {
    let outcome = match (a.outcome, a.exit_code) {
        (Some(OutcomeArg::Success), _) | (None, Some(0)) => Outcome::Success,
        (Some(OutcomeArg::Failure), _) | (None, Some(_)) => Outcome::Failure,
        (None, None) => {
            // Still one JSON line on stdout, as every hook answer.
            let err = crate::error::Error::Usage(
                "post-run needs `--outcome success|failure` or `--exit-code N` (e.g. `--exit-code $?`)".into(),
            );
            let ctx = crate::report::Ctx::new(
                a.request_id
                    .clone()
                    .unwrap_or_else(super::hook::generated_id),
                Some("post_run"),
            );
            crate::report::print_error(&err);
            return emit(&ctx.fail(crate::protocol::Decision::Skipped, &err));
        }
    };
    let request = Request {
        dry_run: a.dry_run,
        backup_id: a.backup_id.clone(),
        backup_sha256: a.backup_sha256.clone(),
        run: Some(RunInfo {
            outcome,
            exit_code: a.exit_code,
        }),
        on_failure: a.on_failure.map(|o| match o {
            OnFailureArg::Restore => OnFailure::Restore,
            OnFailureArg::Keep => OnFailure::Keep,
        }),
        ..flag_request(g, Event::PostRun, a.request_id.clone())
    };
    emit(&guarded(&request))
}
