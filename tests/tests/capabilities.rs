use flowdar::server::{ApacheOptions, ThrowawayApache};

#[test]
#[ignore]
fn scratch_hold_apache() {
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    std::fs::write(
        "/tmp/capx.pid",
        format!("{} {}", apache.pid(), apache.port()),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1800));
}
