//! Any text given to the experiment-spec parser: a located error, never a
//! panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = flowdar_lab::experiment::Spec::parse(std::path::Path::new("fuzz.toml"), text);
    }
});
