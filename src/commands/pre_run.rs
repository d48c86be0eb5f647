//! `ducksafe pre-run`: the hook's `pre_run` event from flags, for make and just. Answers the
//! same single JSON line, with the same exit codes, as `ducksafe hook`.

use super::Global;
use crate::cli::PreRunArgs;
use crate::protocol::{ConfigSource, Event, Request};

pub fn run(g: &Global, a: &PreRunArgs) -> i32 {
    let request = Request {
        protocol_version: 1,
        event: Event::PreRun,
        request_id: a.request_id.clone(),
        config: g.config.as_ref().map(|p| ConfigSource::Path {
            path: p.display().to_string(),
        }),
        dry_run: a.dry_run,
        backup_id: None,
        run: None,
        on_failure: None,
    };
    super::hook::emit(&super::hook::guarded(&request))
}
