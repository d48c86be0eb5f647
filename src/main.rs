//! The `ducksafe` binary: parse, run, exit with the code the run chose.

fn main() {
    quiet_on_a_closed_stdout();
    std::process::exit(ducksafe::cli::main());
}

/// `ducksafe list | head -1`: when the reader goes away, stdout's next write fails with a
/// broken pipe and `println!` panics. Like ripgrep and fd, end quietly with success instead of
/// a panic message: whoever closed the pipe has read all it wanted. Every other panic keeps the
/// default report (the hook answers one with `internal`).
fn quiet_on_a_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.contains("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}
