//! The kit's pin root, with the controller's pin directory of the sandbox gateway.

use std::ops::Deref;

use regionwall::pin::PinDir;
use regionwall_testkit::sandbox::GATEWAY_LAN;

/// A pin root of the test's own; on drop, whatever is pinned there is
/// detached and removed.
#[derive(Default)]
pub struct PinRoot(pub regionwall_testkit::pins::PinRoot);

impl PinRoot {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
    #[must_use]
    pub fn pins(&self) -> PinDir {
        PinDir::new(self.0.path(), GATEWAY_LAN)
    }
}

impl Deref for PinRoot {
    type Target = regionwall_testkit::pins::PinRoot;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}
