//! Flowdar's kernel programs. This file only wires the modules together:
//! `calls` (uprobe/uretprobe event emitters), `tree` (process-tree filter),
//! `maps` (maps and load-time settings).
#![no_std]
#![no_main]

mod calls;
mod maps;
mod tree;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
