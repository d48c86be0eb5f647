//! `ducksafe hook`: reads one JSON request on stdin (at most 1 MiB) and writes the one response
//! line [`crate::hook`] answers. Global flags are accepted and ignored: the configuration comes
//! from the request.

use std::io::Read;

use crate::protocol::MAX_REQUEST_BYTES;

pub fn run() -> i32 {
    let mut buf = Vec::new();
    let read = std::io::stdin()
        .lock()
        .take(MAX_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut buf);
    let response = match read {
        Ok(_) => crate::hook::answer(&buf),
        Err(e) => crate::hook::unreadable(&e),
    };
    let code = crate::output::protocol_line(&response);
    crate::timing::phase("answer written");
    code
}
