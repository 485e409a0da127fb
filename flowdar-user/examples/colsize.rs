use flowdar::store::{ChunkEncoder, TraceReader};
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let mut events = Vec::new();
    TraceReader::open(path.as_ref())
        .unwrap()
        .for_each_event(|e| events.push(*e))
        .unwrap();
    let n = events.len() as f64;
    let mut enc = ChunkEncoder::default();
    let mut out = Vec::new();
    for lvl in [1, 3, 6, 9, 12, 19] {
        let mut total = 0;
        for c in events.chunks(16384) {
            enc.encode(c, &mut out);
            total += zstd::bulk::compress(&out, lvl).unwrap().len();
        }
        println!("level {lvl}: {:.2} B/event", total as f64 / n);
    }
    // Variants: zero slots 1,2 of exits; zero all args
    for (name, f) in [
        ("no args", 0u8),
        ("arg0 only", 1),
        ("args but exits slot0 only", 2),
    ] {
        let ev2: Vec<_> = events
            .iter()
            .map(|e| {
                let mut e = *e;
                match f {
                    0 => e.args = [0; 3],
                    1 => {
                        e.args[1] = 0;
                        e.args[2] = 0;
                    }
                    _ => {
                        if e.kind == 2 {
                            e.args[1] = 0;
                            e.args[2] = 0;
                        }
                    }
                }
                e
            })
            .collect();
        let mut total = 0;
        for c in ev2.chunks(16384) {
            enc.encode(c, &mut out);
            total += zstd::bulk::compress(&out, 3).unwrap().len();
        }
        println!("{name}: {:.2} B/event", total as f64 / n);
    }
}
