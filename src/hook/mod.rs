//! Hook protocol v1 (docs/protocol.md): one request in, one response out, on every path: bad
//! input, invalid configuration, I/O failure, and a panic (caught, answered with `internal`).
//!
//! [`request`] turns stdin's bytes into a typed [`Request`] (or the response that refuses
//! them); [`serve`] does the event's work; [`response`] builds the answers. `ducksafe hook`
//! reads stdin and calls [`answer`]; `pre-run`, `post-run` and `validate` build a typed request
//! from flags and call [`answer_request`], so all of them answer the same way.

pub mod request;
pub mod response;
pub mod serve;

use std::panic::{catch_unwind, AssertUnwindSafe};

pub use response::Ctx;

use crate::error::Error;
use crate::protocol::{generated_request_id, Decision, Request, Response};

/// Answers raw stdin bytes. Never panics: a panic inside is answered with `internal`.
pub fn answer(raw: &[u8]) -> Response {
    let fallback = Ctx::new(generated_request_id(), None);
    guarded(&fallback, || match request::read(raw) {
        Ok((request, ctx)) => serve::handle(&request, ctx),
        Err(refused) => *refused,
    })
}

/// Answers a typed request (built from flags), with the same panic guard as [`answer`].
pub fn answer_request(request: &Request) -> Response {
    let ctx = Ctx::new(
        request
            .request_id
            .clone()
            .unwrap_or_else(generated_request_id),
        Some(request.event.as_str()),
    );
    let fallback = ctx.clone();
    guarded(&fallback, || serve::handle(request, ctx))
}

/// The answer when stdin could not be read at all.
pub fn unreadable(e: &std::io::Error) -> Response {
    Ctx::new(generated_request_id(), None).fail(
        Decision::Abort,
        &Error::InvalidRequest(format!("cannot read stdin: {e}")),
    )
}

/// Runs `serve`; a panic inside is answered with `internal` from `fallback`, never a missing
/// line.
fn guarded(fallback: &Ctx, serve: impl FnOnce() -> Response) -> Response {
    match catch_unwind(AssertUnwindSafe(serve)) {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            fallback.fail(Decision::Abort, &Error::Internal(what))
        }
    }
}
