//! The production object: the XDP program [`regionwall_ebpf::filter`] with
//! the destination lookup the controller chose at load time, and the TC
//! egress DNS copier.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
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

/// The classifier, in a private module: at the crate root the `pub fn`
/// wrapper `#[classifier]` generates (taking the kernel's `*mut __sk_buff`)
/// trips clippy's `not_unsafe_ptr_arg_deref`; the symbol is exported either way.
mod tc {
    use super::{TcContext, classifier};

    /// TC egress of the LAN interface: copies DNS answers to the
    /// controller, never changes or drops a frame (see
    /// [`regionwall_ebpf::dns`]).
    #[classifier]
    pub fn regionwall_dns(ctx: TcContext) -> i32 {
        regionwall_ebpf::dns::copy_answers(&ctx)
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
