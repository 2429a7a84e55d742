//! The names an events filter may use: the live policy's devices and
//! regions, shared with the control socket and updated on reload.

use crate::compile::Compiled;

/// The names a filter may use: the live policy's devices and regions
/// (`-` for no region). Shared with the control socket, updated on reload.
#[derive(Clone, Debug, Default)]
pub struct Known {
    pub devices: Vec<String>,
    pub regions: Vec<String>,
}

impl Known {
    pub(super) fn of(c: &Compiled) -> Self {
        let named =
            |v: &[String]| -> Vec<String> { v.iter().filter(|n| !n.is_empty()).cloned().collect() };
        let mut regions = named(&c.region_names);
        regions.push("-".into());
        Self {
            devices: named(&c.device_names),
            regions,
        }
    }

    /// Why `filter` can never match, if it names what the policy lacks.
    #[must_use]
    pub fn unknown(&self, filter: &crate::control::Filter) -> Option<String> {
        let check = |what: &str, want: &Option<String>, have: &[String]| {
            want.as_ref().filter(|w| !have.contains(w)).map(|w| {
                format!(
                    "unknown {what} {:?}: expected one of {}",
                    crate::shown::escaped(w),
                    have.join(", ")
                )
            })
        };
        check("device", &filter.device, &self.devices)
            .or_else(|| check("region", &filter.region, &self.regions))
    }
}
