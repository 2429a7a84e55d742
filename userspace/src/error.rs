//! Typed errors of the library.

use std::{io, path::PathBuf};

use crate::policy::Diagnostics;

/// A policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
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
}
