//! A pin root of a test's own on the host's bpffs, cleaned up on drop.

use std::path::{Path, PathBuf};

use regionwall::{demo::GATEWAY_LAN, pin::PinDir};

/// A pin root of the test's own; on drop, whatever is pinned there is
/// detached and removed.
pub struct PinRoot(pub PathBuf);

impl PinRoot {
    #[must_use]
    pub fn new() -> Self {
        Self(Path::new("/sys/fs/bpf").join(regionwall::netns::unique_name("test-pins")))
    }
    #[must_use]
    pub fn arg(&self) -> &str {
        self.0.to_str().expect("UTF-8 path")
    }
    #[must_use]
    pub fn pins(&self) -> PinDir {
        PinDir::new(&self.0, GATEWAY_LAN)
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        let pins = self.pins();
        let _ = pins.detach_link();
        let _ = pins.remove_all();
        let _ = std::fs::remove_dir(&self.0);
    }
}
