//! Any bytes given to the trace reader: errors and warnings, never a panic,
//! and never more memory than a frame's bound.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.flowdar");
    if let Ok(mut r) = flowdar_trace::TraceReader::from_reader(path, std::io::Cursor::new(data.to_vec())) {
        while let Ok(Some(_)) = r.next_chunk() {}
        let _ = r.warnings();
    }
    // The chunk decoder on its own, without the checksum in front of it.
    let _ = flowdar_trace::decode_chunk(data, &mut Vec::new());
});
