//! Typed errors of the library, each defined beside the code that raises
//! it and re-exported here.

pub use crate::{
    compile::CompileError,
    datapath::DatapathError,
    fib::{FibError, Shortfall},
    policy::PolicyError,
};
