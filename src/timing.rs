//! The `DEBUG` phase log: where a command's time goes, in milliseconds from the start of `main`.
//!
//! Two kinds of line, both at `DEBUG` (nothing is measured or formatted at other levels):
//! - `phase NAME: D ms (at T ms)`: a step on the command's own path, which took `D` since the
//!   previous phase (or since `main` started) and ended `T` after `main` started;
//! - `NAME: D ms (from S to T ms)`: work timed on its own ([`took`]), which may run on another
//!   thread beside the phases (DuckDB's start-up, a scan, an fsync).
//!
//! Invariant: timing never changes what a command does; it only logs. Phases logged before
//! logging started (the configuration is read first) are folded into the first phase logged
//! after it.

use std::sync::Mutex;
use std::time::Instant;

/// When `main` started, and when the last phase ended.
static CLOCK: Mutex<Option<(Instant, Instant)>> = Mutex::new(None);

/// Starts the clock: the first thing `main` does.
pub fn start() {
    let now = Instant::now();
    if let Ok(mut c) = CLOCK.lock() {
        *c = Some((now, now));
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Ends a phase of the command's own path: logs how long it took since the previous one.
pub fn phase(name: &str) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let now = Instant::now();
    let Ok(mut c) = CLOCK.lock() else { return };
    let (start, last) = c.get_or_insert((now, now));
    let took = ms(now - *last);
    let at = ms(now - *start);
    *last = now;
    drop(c);
    tracing::debug!("phase {name}: {took:.1} ms (at {at:.1} ms)");
}

/// Logs work that started at `started` and ends now, off the phases' path.
pub fn took(name: &str, started: Instant) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let now = Instant::now();
    let origin = CLOCK.lock().ok().and_then(|c| c.map(|(s, _)| s));
    let took = ms(now - started);
    if let Some(s) = origin {
        tracing::debug!(
            "{name}: {took:.1} ms (from {:.1} to {:.1} ms)",
            ms(started.saturating_duration_since(s)),
            ms(now - s)
        );
    } else {
        tracing::debug!("{name}: {took:.1} ms");
    }
}
