//! `ducksafe validate`: the hook's `validate` event from flags. Checks the configuration, that
//! the database is a readable DuckDB file and that the backup directory is safe, writing
//! nothing; answers the same single JSON line, with the same exit codes, as `ducksafe hook`.

use super::hook::{flag_request, guarded};
use super::Global;
use crate::protocol::Event;

pub fn run(g: &Global) -> i32 {
    let response = guarded(&flag_request(g, Event::Validate, None));
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
