//! `ducksafe validate`: the hook's `validate` event from flags. Checks the configuration, that
//! the database is a readable DuckDB file and that the backup directory is safe, writing
//! nothing. With `--json` it answers the hook's single JSON line; without, the verdict for
//! people. Problems go to stderr either way, and the exit code is the hook's.

use std::io::{self, Write};

use serde::Serialize;

use super::Global;
use crate::output::{self, Failure, Report};
use crate::protocol::{ErrorCode, ErrorEntry, Event, Response};

/// The hook's answer, read by people.
#[derive(Serialize)]
#[serde(transparent)]
struct Verdict(Response);

impl Report for Verdict {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        if self.0.exit_code == 0 {
            writeln!(out, "{}", self.0.reason)?;
        }
        Ok(())
    }

    fn warnings(&self) -> &[String] {
        &self.0.warnings
    }

    fn failure(&self) -> Option<(Vec<ErrorEntry>, i32)> {
        (self.0.exit_code != 0).then(|| (self.0.errors.clone(), self.0.exit_code))
    }

    /// An invalid configuration's problems are closed by the line that names it.
    fn failure_summary(&self) -> Option<String> {
        self.0
            .errors
            .first()
            .is_some_and(|e| e.code == ErrorCode::ConfigInvalid)
            .then(|| self.0.reason.clone())
    }

    fn audit(&self) -> crate::audit::Facts {
        crate::audit::Facts::from_response(&self.0)
    }
}

pub fn run(g: &Global) -> i32 {
    let response = crate::hook::answer_request(&g.request(Event::Validate, None));
    if g.json {
        // As every operator command: the report on stdout, its problems on stderr too.
        output::print_response_errors(&response);
        return output::protocol_line(&response);
    }
    output::finish(false, Ok::<_, Failure>(Verdict(response)))
}
