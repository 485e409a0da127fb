//! The `flowdar` binary: parse the command line, run it, and turn any error
//! into one line on stderr and exit status 1.
fn main() {
    // Die quietly on a closed pipe (`flowdar dump t | head`), like other
    // Unix tools, instead of panicking in println!.
    // SAFETY: setting a signal disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    if let Err(e) = flowdar::cli::run() {
        eprintln!("Error: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each cause once: most messages
/// already quote their source, which `{:#}` would repeat.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line.replace('\n', " ")
}
