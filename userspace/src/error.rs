//! Typed errors of the library.

use std::{io, path::PathBuf};

use crate::{fib::FibError, input::InputError, policy::Diagnostics};

/// A policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Not a regular file, or over the size limit.
    #[error("policy {0}")]
    Input(InputError),
    #[error("{0}")]
    Invalid(Diagnostics),
}

impl From<InputError> for PolicyError {
    fn from(e: InputError) -> Self {
        match e {
            InputError::Io { path, source } => Self::Io { path, source },
            other => Self::Input(other),
        }
    }
}

/// A compiled policy does not fit the kernel tables.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(
        "{devices} devices x {classes} region classes x {port_classes} port classes = {cells} decision cells; at most {max} fit"
    )]
    TooManyDecisions {
        devices: usize,
        classes: usize,
        port_classes: usize,
        cells: usize,
        max: u32,
    },
    #[error("{classes} region classes; at most {max} are supported")]
    TooManyClasses { classes: usize, max: u32 },
    #[error("{count} {family} prefixes; the table holds at most {max}")]
    TooManyPrefixes {
        family: &'static str,
        count: usize,
        max: u32,
    },
}

/// Loading, publishing to or reading from the kernel failed.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the XDP program: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("map {0} is missing from the XDP object")]
    MissingMap(&'static str),
    #[error("{op} on map {name}: {source}")]
    Syscall {
        op: &'static str,
        name: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("map {name} holds {found} entries after publishing, expected {expected}")]
    CountMismatch {
        name: &'static str,
        found: usize,
        expected: usize,
    },
    #[error("interface {name}: {source}")]
    Interface {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Fib(#[from] FibError),
    #[error("pinning the {what}: {source}")]
    Pin {
        what: &'static str,
        #[source]
        source: aya::pin::PinError,
    },
    #[error(transparent)]
    Pinned(#[from] crate::pin::PinError),
    #[error(transparent)]
    Slots(#[from] crate::slots::SlotError),
    #[error("XDP link: {0}")]
    Link(#[from] aya::programs::links::LinkError),
    #[error(
        "the kernel attached XDP through netlink, not a bpf_link; pinning needs Linux 5.9 or later"
    )]
    NoBpfLink,
}
