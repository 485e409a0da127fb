//! Builds the kernel programs (`flowdar-ebpf`) with the nightly toolchain for
//! the BPF target and leaves the object in `OUT_DIR` for `include_bytes_aligned!`.
use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let ebpf = Package {
        name: "flowdar-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../flowdar-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], Toolchain::default())
        .context("building the eBPF programs (is bpf-linker on PATH? run `cargo xtask setup`)")
        .map_err(|e| anyhow!("{e:#}"))
}
