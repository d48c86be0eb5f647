//! `ducksafe post-run`: the hook's `post_run` event from flags, for make and just. Answers the
//! same single JSON line, with the same exit codes, as `ducksafe hook`, a usage error included.

use super::Global;
use crate::cli::{OnFailureArg, OutcomeArg, PostRunArgs};
use crate::error::Error;
use crate::hook::Ctx;
use crate::output;
use crate::protocol::{
    generated_request_id, Decision, Event, OnFailure, Outcome, Request, RunInfo,
};

pub fn run(g: &Global, a: &PostRunArgs) -> i32 {
    let outcome = match (a.outcome, a.exit_code) {
        (Some(OutcomeArg::Success), _) | (None, Some(0)) => Outcome::Success,
        (Some(OutcomeArg::Failure), _) | (None, Some(_)) => Outcome::Failure,
        (None, None) => {
            // Still one JSON line on stdout, as every hook answer.
            let err = Error::Usage(
                "post-run needs `--outcome success|failure` or `--exit-code N` (e.g. `--exit-code $?`)".into(),
            );
            let ctx = Ctx::new(
                a.request_id.clone().unwrap_or_else(generated_request_id),
                Some("post_run"),
            );
            output::print_error(&err);
            return output::protocol_line(&ctx.fail(Decision::Skipped, &err));
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
        ..g.request(Event::PostRun, a.request_id.clone())
    };
    output::protocol_line(&crate::hook::answer_request(&request))
}
