//! `ducksafe pre-run`: the hook's `pre_run` event from flags, for make and just. Answers the
//! same single JSON line, with the same exit codes, as `ducksafe hook`.

use super::Global;
use crate::cli::PreRunArgs;
use crate::protocol::{Event, Request};

pub fn run(g: &Global, a: &PreRunArgs) -> i32 {
    let request = Request {
        dry_run: a.dry_run,
        ..g.request(Event::PreRun, a.request_id.clone())
    };
    crate::output::protocol_line(&crate::hook::answer_request(&request))
}
