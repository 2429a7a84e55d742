//! Pinned state of one interface: the XDP link, the program and every map
//! under `<root>/<iface>/` (root `/sys/fs/bpf/regionwall` by default), and
//! the TC egress DNS copier's link and program beside them (`dns_link`,
//! `dns_prog`).
//!
//! The pinned link keeps the program attached when the controller exits or
//! is killed: enforcement of the last published policy continues (fail
//! closed for what the policy blocks). A restarted controller inspects the
//! directory and either adopts it (same layout, same lookup, consistent
//! pins: it loads its program on the pinned maps and swaps it onto the link
//! atomically) or replaces it (fresh maps, policy published, then the
//! program swapped onto the same link): never a gap.

use std::{
    io,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{maps::MapData, programs::ProgramInfo};
use regionwall_common::{LAYOUT_SLOT_LOOKUP, LAYOUT_SLOT_VERSION};

pub use crate::sys::LinkFacts;
use crate::{
    layout::{CONTROLLER_MAPS, DNS_MAPS, PINNED_MAPS},
    sys,
};

/// Where pins live unless `--pin-root` says otherwise.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/regionwall";

/// Pinned state could not be read, written or removed.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} is not on a bpf filesystem (mount one: mount -t bpf bpf /sys/fs/bpf)",
        path.display()
    )]
    NotBpffs { path: PathBuf },
    #[error("nothing is pinned at {}", path.display())]
    Missing { path: PathBuf },
    #[error("pinned map {}: {source}", path.display())]
    Map {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PinError + '_ {
    move |source| PinError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Why `name` cannot be an interface name (the kernel's `dev_valid_name`:
/// 1 to 15 bytes, not `.` or `..`, no `/`, `:` or white space). The pin
/// directory is named after the interface, so this also keeps it inside
/// the pin root.
#[must_use]
pub fn invalid_iface_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 15 {
        Some("it is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("it is `.` or `..`")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
    {
        Some("it contains `/`, `:` or white space")
    } else {
        None
    }
}

/// The pin directory of one interface.
#[derive(Clone, Debug)]
pub struct PinDir {
    dir: PathBuf,
}

/// What a pin directory holds.
#[derive(Clone, Debug, Default)]
pub struct Found {
    /// `LAYOUT` slots, when that map is pinned and readable.
    pub layout: Option<u32>,
    pub lookup: Option<u32>,
    /// The pinned link, when there is one.
    pub link: Option<LinkFacts>,
    /// Id of the pinned program.
    pub prog_id: Option<u32>,
    /// The pinned DNS copier link (TCX egress), when there is one.
    pub dns_link: Option<LinkFacts>,
    /// Id of the pinned DNS copier program.
    pub dns_prog_id: Option<u32>,
    /// Pinned maps missing.
    pub missing: Vec<&'static str>,
    /// Pinned maps the pinned program does not use (left from an
    /// interrupted replacement).
    pub foreign: Vec<&'static str>,
}

impl Found {
    /// Why these pins cannot be adopted by a controller of `layout` with
    /// `lookup`; `None` when they can.
    #[must_use]
    pub fn refusal(&self, layout: u32, lookup: u32) -> Option<String> {
        if !self.missing.is_empty() {
            return Some(format!("maps not pinned: {}", self.missing.join(", ")));
        }
        match self.layout {
            Some(v) if v == layout => {}
            Some(v) => return Some(format!("pinned layout {v}, this controller has {layout}")),
            None => return Some("no layout version pinned".into()),
        }
        if self.lookup != Some(lookup) {
            return Some(format!(
                "pinned tables are for lookup {:?}, this controller uses {lookup}",
                self.lookup
            ));
        }
        if !self.foreign.is_empty() {
            return Some(format!(
                "pinned maps {} are not the pinned program's",
                self.foreign.join(", ")
            ));
        }
        match (self.link, self.prog_id) {
            (Some(link), Some(prog)) if link.prog_id != prog => {
                return Some(format!(
                    "the link runs program {}, the pinned program is {prog}",
                    link.prog_id
                ));
            }
            (_, None) => return Some("no program pinned".into()),
            _ => {}
        }
        // The DNS copier is optional (`--no-dns`, or a kernel without
        // TCX): its absence is no reason to replace, a mismatch is.
        match (self.dns_link, self.dns_prog_id) {
            (Some(link), Some(prog)) if link.prog_id != prog => Some(format!(
                "the DNS link runs program {}, the pinned DNS program is {prog}",
                link.prog_id
            )),
            (Some(link), None) => Some(format!(
                "the DNS link runs program {}, but no DNS program is pinned",
                link.prog_id
            )),
            _ => None,
        }
    }
}

impl PinDir {
    #[must_use]
    pub fn new(root: &Path, iface: &str) -> Self {
        Self {
            dir: root.join(iface),
        }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.dir
    }

    #[must_use]
    pub fn link(&self) -> PathBuf {
        self.dir.join("link")
    }

    #[must_use]
    pub fn prog(&self) -> PathBuf {
        self.dir.join("prog")
    }

    /// The TC egress DNS copier's link.
    #[must_use]
    pub fn dns_link(&self) -> PathBuf {
        self.dir.join("dns_link")
    }

    /// The TC egress DNS copier program.
    #[must_use]
    pub fn dns_prog(&self) -> PathBuf {
        self.dir.join("dns_prog")
    }

    #[must_use]
    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates the directory (mode 0700), mounting a bpf filesystem on
    /// /sys/fs/bpf first when nothing is mounted there.
    pub fn create(&self) -> Result<(), PinError> {
        use std::os::unix::fs::DirBuilderExt as _;
        let sys_bpf = Path::new("/sys/fs/bpf");
        if self.dir.starts_with(sys_bpf) && !sys::is_bpffs(sys_bpf).unwrap_or(false) {
            sys::mount_bpffs(sys_bpf).map_err(io_err(sys_bpf))?;
            log::info!("mounted a bpf filesystem on /sys/fs/bpf");
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err(&self.dir))?;
        if !sys::is_bpffs(&self.dir).map_err(io_err(&self.dir))? {
            return Err(PinError::NotBpffs {
                path: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Whether anything is pinned here.
    #[must_use]
    pub fn exists(&self) -> bool {
        self.link().exists() || self.prog().exists() || self.map("CONTROL").exists()
    }

    /// The pinned link's facts (`None` when no link is pinned).
    pub fn link_facts(&self) -> Result<Option<LinkFacts>, PinError> {
        Self::facts_at(&self.link())
    }

    /// The pinned DNS copier link's facts (`None` when none is pinned).
    pub fn dns_link_facts(&self) -> Result<Option<LinkFacts>, PinError> {
        Self::facts_at(&self.dns_link())
    }

    fn facts_at(path: &Path) -> Result<Option<LinkFacts>, PinError> {
        match sys::obj_get(path) {
            Ok(fd) => Ok(Some(sys::link_facts(fd.as_fd()).map_err(io_err(path))?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// Reads what is pinned; `None` when nothing is.
    pub fn inspect(&self) -> Result<Option<Found>, PinError> {
        if !self.exists() {
            return Ok(None);
        }
        let mut found = Found {
            link: self.link_facts()?,
            dns_link: self.dns_link_facts()?,
            ..Found::default()
        };
        let prog_maps = match ProgramInfo::from_pin(self.prog()) {
            Ok(info) => {
                found.prog_id = Some(info.id());
                info.map_ids().ok().flatten().unwrap_or_default()
            }
            Err(_) => Vec::new(),
        };
        let dns_maps = match ProgramInfo::from_pin(self.dns_prog()) {
            Ok(info) => {
                found.dns_prog_id = Some(info.id());
                info.map_ids().ok().flatten().unwrap_or_default()
            }
            Err(_) => Vec::new(),
        };
        for name in PINNED_MAPS {
            let Ok(map) = self.open_map(name) else {
                found.missing.push(name);
                continue;
            };
            let id = map.info().map_or(0, |i| i.id());
            // LAYOUT and NAMES are the controller's records; the program
            // never reads them.
            // The DNS maps belong to the DNS copier, checked against it
            // when it is pinned.
            let foreign = if DNS_MAPS.contains(&name) {
                found.dns_prog_id.is_some() && !dns_maps.contains(&id)
            } else {
                !CONTROLLER_MAPS.contains(&name)
                    && found.prog_id.is_some()
                    && !prog_maps.contains(&id)
            };
            if foreign {
                found.foreign.push(name);
            }
            if name == "LAYOUT" {
                let array: Result<aya::maps::Array<MapData, u32>, _> =
                    aya::maps::Array::try_from(aya::maps::Map::Array(map));
                if let Ok(array) = array {
                    found.layout = array.get(&LAYOUT_SLOT_VERSION, 0).ok();
                    found.lookup = array.get(&LAYOUT_SLOT_LOOKUP, 0).ok();
                }
            }
        }
        Ok(Some(found))
    }

    /// Opens a pinned map.
    pub fn open_map(&self, name: &str) -> Result<MapData, PinError> {
        let path = self.map(name);
        MapData::from_pin(&path).map_err(|source| PinError::Map { path, source })
    }

    /// Max entries of a pinned map.
    pub fn max_entries(&self, name: &str) -> Result<u32, PinError> {
        self.open_map(name)?
            .info()
            .map(|i| i.max_entries())
            .map_err(|source| PinError::Map {
                path: self.map(name),
                source,
            })
    }

    /// Removes every pin and the directory. Returns the names removed.
    pub fn remove_all(&self) -> Result<Vec<String>, PinError> {
        let mut removed = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
            Err(e) => return Err(io_err(&self.dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err(&self.dir))?;
            let path = entry.path();
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            removed.push(entry.file_name().to_string_lossy().into_owned());
        }
        std::fs::remove_dir(&self.dir).map_err(io_err(&self.dir))?;
        removed.sort();
        Ok(removed)
    }

    /// Removes one pin if present.
    pub fn unpin(&self, path: &Path) -> Result<(), PinError> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// Detaches the pinned link whoever holds it (`BPF_LINK_DETACH`).
    pub fn detach_link(&self) -> Result<bool, PinError> {
        Self::detach_at(&self.link())
    }

    /// Detaches the pinned DNS copier link whoever holds it.
    pub fn detach_dns_link(&self) -> Result<bool, PinError> {
        Self::detach_at(&self.dns_link())
    }

    fn detach_at(path: &Path) -> Result<bool, PinError> {
        match sys::obj_get(path) {
            Ok(fd) => {
                sys::link_detach(fd.as_fd()).map_err(io_err(path))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(path)(e)),
        }
    }
}

/// The pinned maps `stats` and `events` read when no controller runs.
pub struct PinnedMaps {
    maps: std::collections::HashMap<&'static str, aya::maps::Map>,
}

impl PinnedMaps {
    /// Opens the maps the readings need.
    pub fn open(pins: &PinDir) -> Result<Self, PinError> {
        use aya::maps::Map;
        let mut maps = std::collections::HashMap::new();
        for name in [
            "CONTROL",
            "POLICY_META",
            "COUNTERS_MAP",
            "TRAFFIC",
            "COUNTRY_TRAFFIC",
            "DESTINATIONS",
            "RATE_LIMIT",
            "NAMES",
        ] {
            let data = pins.open_map(name)?;
            let map = match name {
                "CONTROL" | "POLICY_META" | "NAMES" => Map::Array(data),
                "DESTINATIONS" => Map::PerCpuLruHashMap(data),
                _ => Map::PerCpuArray(data),
            };
            maps.insert(name, map);
        }
        // Pins made before the DNS copier existed lack its counters; the
        // other readings work without them.
        if let Ok(data) = pins.open_map("DNS_COUNTERS") {
            maps.insert("DNS_COUNTERS", Map::PerCpuArray(data));
        }
        Ok(Self { maps })
    }

    /// The pinned event ring (consuming from it takes events from any
    /// other reader).
    pub fn events(pins: &PinDir) -> Result<aya::maps::RingBuf<MapData>, PinError> {
        Self::ring(pins, "EVENTS")
    }

    /// The pinned candidate event ring (consuming from it takes events
    /// from any other reader).
    pub fn candidate_events(pins: &PinDir) -> Result<aya::maps::RingBuf<MapData>, PinError> {
        Self::ring(pins, "CANDIDATE_EVENTS")
    }

    /// The pinned DNS copy ring (records are
    /// [`regionwall_common::dns::DnsCopy`]; consuming takes them from any
    /// other reader).
    pub fn dns(pins: &PinDir) -> Result<aya::maps::RingBuf<MapData>, PinError> {
        Self::ring(pins, "DNS_RING")
    }

    fn ring(pins: &PinDir, name: &str) -> Result<aya::maps::RingBuf<MapData>, PinError> {
        let data = pins.open_map(name)?;
        aya::maps::RingBuf::try_from(aya::maps::Map::RingBuf(data)).map_err(|source| {
            PinError::Map {
                path: pins.map(name),
                source,
            }
        })
    }
}

impl crate::readings::Readings for PinnedMaps {
    fn map_named(&self, name: &'static str) -> Result<&aya::maps::Map, crate::readings::ReadError> {
        self.maps
            .get(name)
            .ok_or(crate::readings::ReadError::MissingMap(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adoptable() -> Found {
        let link = LinkFacts {
            id: 1,
            prog_id: 10,
            ifindex: 2,
        };
        Found {
            layout: Some(7),
            lookup: Some(0),
            link: Some(link),
            prog_id: Some(10),
            ..Found::default()
        }
    }

    /// The DNS copier is optional: pins without it are adopted; a DNS
    /// link running another program than the pinned one is not.
    #[test]
    fn the_dns_copier_is_checked_only_when_pinned() {
        let found = adoptable();
        assert_eq!(found.refusal(7, 0), None);
        let dns = LinkFacts {
            id: 3,
            prog_id: 20,
            ifindex: 2,
        };
        let with_dns = Found {
            dns_link: Some(dns),
            dns_prog_id: Some(20),
            ..found.clone()
        };
        assert_eq!(with_dns.refusal(7, 0), None);
        let stale = Found {
            dns_prog_id: Some(21),
            ..with_dns.clone()
        };
        assert!(stale.refusal(7, 0).is_some_and(|r| r.contains("DNS link")));
        let unpinned = Found {
            dns_prog_id: None,
            ..with_dns
        };
        assert!(unpinned.refusal(7, 0).is_some());
        let program_only = Found {
            dns_prog_id: Some(20),
            ..found
        };
        assert_eq!(program_only.refusal(7, 0), None);
    }
}
