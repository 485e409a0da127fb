//! The `flowdar` binary: parse the command line, run it, and turn any error
//! into one line on stderr and exit status 1.
fn main() {
    if let Err(e) = flowdar::cli::run() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
