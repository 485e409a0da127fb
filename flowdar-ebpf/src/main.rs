//! Flowdar's kernel programs. This file only wires the modules together:
//! `calls` (uprobe/uretprobe event emitters), `client` (connection
//! clients), `tree` (process-tree filter),
//! `maps` (maps and load-time settings), `shadow` (held entries for
//! `record --min-duration`).
#![no_std]
#![no_main]
// `atomic_xadd` for counters: the BPF target has no `AtomicU64::fetch_add`,
// but LLVM lowers the intrinsic to the BPF atomic add instruction.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod calls;
mod client;
mod maps;
mod shadow;
mod tree;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
