//! Typed errors of the library. [`PolicyError`] and [`CompileError`] live
//! beside the code that raises them and are re-exported here.

pub use crate::{compile::CompileError, policy::PolicyError};

/// One compiled-lookup table that needs more room than the program was
/// loaded with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// The kernel map, e.g. `FIB_RANGES`.
    pub what: &'static str,
    /// The `run` option that sets this room, e.g. `--fib-ranges`.
    pub flag: &'static str,
    pub needed: usize,
    pub capacity: usize,
}

impl Shortfall {
    /// The value to give [`Shortfall::flag`]: 1.5 times the need, as `run`
    /// sizes its tables at start, so later reloads can grow.
    #[must_use]
    pub const fn suggested(&self) -> usize {
        self.needed.saturating_add(self.needed.div_ceil(2))
    }
}

/// `needs A FIB_SLOTS entries (room for X) and B FIB_RANGES entries (room for Y)`.
fn needs(tables: &[Shortfall]) -> String {
    tables
        .iter()
        .map(|t| {
            format!(
                "needs {} {} entries (room for {})",
                t.needed, t.what, t.capacity
            )
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

/// `--fib-slots N --fib-ranges M`.
fn raise(tables: &[Shortfall]) -> String {
    tables
        .iter()
        .map(|t| format!("{} {}", t.flag, t.suggested()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The compiled lookup cannot represent a table.
#[derive(Debug, thiserror::Error)]
pub enum FibError {
    /// Every table that does not fit (at least one).
    #[error(
        "the compiled lookup {} but the program was loaded with less; restart `run` with {} (1.5 times the need, so reloads can grow), or use --lookup lpm",
        needs(.0),
        raise(.0)
    )]
    Capacity(Vec<Shortfall>),
    #[error("region class {class} does not fit the compiled lookup's 15-bit class field")]
    ClassTooLarge { class: u32 },
    #[error(
        "more than {max} IPv6 /64s contain prefixes longer than /64; the compiled lookup cannot hold them (use --lookup lpm)"
    )]
    TooManyLong { max: usize },
    #[error("the compiled lookup exceeds 2^32 entries")]
    TooLarge,
}
