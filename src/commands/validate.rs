//! `ducksafe validate`: the hook's `validate` event from flags. Checks the configuration, that
//! the database is a readable DuckDB file and that the backup directory is safe, writing
//! nothing; answers the same single JSON line, with the same exit codes, as `ducksafe hook`.

use super::Global;
use crate::protocol::{ConfigSource, Event, Request};

pub fn run(g: &Global) -> i32 {
    let request = Request {
        protocol_version: 1,
        event: Event::Validate,
        request_id: None,
        config: g.config.as_ref().map(|p| ConfigSource::Path {
            path: p.display().to_string(),
        }),
        dry_run: false,
        backup_id: None,
        run: None,
        on_failure: None,
    };
    let response = super::hook::guarded(&request);
    if !g.json {
        // People get the verdict on stderr too; stdout keeps the one JSON line.
        if response.exit_code == 0 {
            eprintln!("ducksafe: {}", response.reason);
            crate::report::print_warnings(&response.warnings);
        } else {
            crate::report::print_entries(&response.errors);
        }
    }
    super::hook::emit(&response)
}
