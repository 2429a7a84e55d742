//! The production XDP program: [`regionwall_ebpf::filter`] with the
//! destination lookup the controller chose at load time.
#![no_std]
#![no_main]

use aya_ebpf::{macros::xdp, programs::XdpContext};
use regionwall_common::Lookup;

/// [`Lookup`] as u32, set by the controller before loading (read-only data,
/// so the verifier drops the branch not taken).
#[unsafe(no_mangle)]
static LOOKUP: u32 = Lookup::Compiled as u32;

#[xdp]
pub fn regionwall(ctx: XdpContext) -> u32 {
    // SAFETY: a plain read of a constant the loader may have patched.
    let lookup = unsafe { core::ptr::read_volatile(&raw const LOOKUP) };
    if lookup == Lookup::Lpm as u32 {
        regionwall_ebpf::filter(&ctx, Lookup::Lpm)
    } else {
        regionwall_ebpf::filter(&ctx, Lookup::Compiled)
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
