//! The `flowdar` binary: parse the command line, run it, and turn any error
//! into one line on stderr and exit status 1.
#[expect(
    clippy::print_stderr,
    reason = "the last line of every command that fails"
)]
fn main() {
    // Die quietly on a closed pipe (`flowdar dump t | head`), like other
    // Unix tools, instead of panicking in println!.
    // SAFETY: setting a signal disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    if let Err(e) = flowdar::cli::run() {
        eprintln!("Error: {}", flowdar::errors::chain(e.as_ref()));
        std::process::exit(1);
    }
}
