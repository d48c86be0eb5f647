//! The progress bar an operator sees on stderr during long work: copying, reading back,
//! hashing and scanning a backup, rebuilding or staging a restore.
//!
//! Invariants:
//! - Off unless a command turned it on with [`enable`], which only the operator commands that
//!   do long work call (`backup`, `restore`, `verify`), and only when stderr is a terminal and
//!   `--quiet` was not given. The hook, `pre-run` and `post-run` never draw one: a caller reads
//!   their stderr as a log, and a piped stderr gets no bar either.
//! - Off, every call here is one atomic load: the copy and hash loops call [`advance`] per step
//!   whatever the mode.
//! - One bar at a time, for one step ([`step`]); the step's guard clears it when it ends, so
//!   the report and warnings that follow are printed on a clean line, and a log line written
//!   meanwhile ([`Suspending`]) is printed above the bar, not through it.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static ENABLED: AtomicBool = AtomicBool::new(false);
static CURRENT: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Whether a bar would be drawn for a command asked with `quiet`: stderr is a terminal.
pub fn wanted(quiet: bool) -> bool {
    !quiet && io::stderr().is_terminal()
}

/// Turns the bar on for this process when [`wanted`].
pub fn enable(quiet: bool) {
    if wanted(quiet) {
        ENABLED.store(true, Ordering::Relaxed);
    }
}

/// A step of long work being shown; the bar goes when it is dropped.
#[must_use = "the bar shows the step only while its guard lives"]
pub struct Step(bool);

impl Drop for Step {
    fn drop(&mut self) {
        if self.0 {
            if let Some(bar) = lock().take() {
                bar.finish_and_clear();
            }
        }
    }
}

/// Shows `what` (`copying simulation.duckdb`) with a bar over `bytes` bytes, or a spinner when
/// the amount is not known (a scan inside DuckDB).
pub fn step(what: &str, bytes: Option<u64>) -> Step {
    if !ENABLED.load(Ordering::Relaxed) {
        return Step(false);
    }
    let bar = if let Some(total) = bytes {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template(
                "{msg} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        )
    } else {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template("{msg} {spinner} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    };
    bar.set_message(what.to_owned());
    if let Some(old) = lock().replace(bar) {
        old.finish_and_clear();
    }
    Step(true)
}

/// `n` more bytes of the current step are done.
pub fn advance(n: u64) {
    if ENABLED.load(Ordering::Relaxed) {
        if let Some(bar) = lock().as_ref() {
            bar.inc(n);
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, Option<ProgressBar>> {
    CURRENT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Stderr for the log: a line is written with the bar hidden, then the bar is drawn again
/// below it.
pub struct Suspending;

impl Write for Suspending {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let bar = if ENABLED.load(Ordering::Relaxed) {
            lock().clone()
        } else {
            None
        };
        match bar {
            Some(bar) => bar.suspend(|| io::stderr().write(buf)),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
