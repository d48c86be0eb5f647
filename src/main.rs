//! The `ducksafe` binary: parse, run, exit with the code the run chose.

fn main() {
    std::process::exit(ducksafe::cli::main());
}
