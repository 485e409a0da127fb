//! Flowdar's kernel programs. This file only wires the modules together:
//! `calls` (uprobe/uretprobe programs), `client` (connection clients),
//! `shadow` (held entries for `record --min-duration`), `syscalls`
//! (socket I/O from syscall tracepoints: lean capture), `syscall_fentry`
//! (the same from fentry/fexit programs, opt-in), `traceparent`
//! (a request's W3C trace context), `tree`
//! (process-tree filter); below them `emit` (ring-buffer records) and
//! `maps` (maps and load-time settings), which import none of them.
#![no_std]
#![no_main]
// `atomic_xadd` for counters: the BPF target has no `AtomicU64::fetch_add`,
// but LLVM lowers the intrinsic to the BPF atomic add instruction.
#![expect(internal_features, reason = "core_intrinsics: atomic_xadd, as above")]
#![feature(core_intrinsics)]

mod calls;
mod client;
mod emit;
mod maps;
mod shadow;
mod syscall_fentry;
mod syscalls;
mod traceparent;
mod tree;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
