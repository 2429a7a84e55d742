//! test_run on a controller's pinned XDP program from another thread
//! until stopped, recording for each frame the verdicts in the order they
//! changed: a switch seen as `[PASS, DROP]` happened once, with no
//! verdict from neither side in between.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use aya::programs::Xdp;
use aya_obj::programs::XdpAttachType;
use regionwall_testkit::xdp::{XDP_DROP, XDP_PASS};

/// What one frame got: its verdicts with repeats collapsed, and how many
/// times it was run.
#[derive(Clone, Debug, Default)]
pub struct Probed {
    pub verdicts: Vec<u32>,
    pub runs: u64,
}

pub struct Prober {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Probed>>,
}

impl Prober {
    /// Runs the program pinned at `prog` on each of `frames` in turn.
    pub fn start(prog: PathBuf, frames: Vec<Vec<u8>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let prog = Xdp::from_pin(&prog, XdpAttachType::Interface).expect("pinned program");
            let mut seen = vec![Probed::default(); frames.len()];
            while !s.load(Ordering::Relaxed) {
                for (i, f) in frames.iter().enumerate() {
                    let v = super::prog::verdict(&prog, f);
                    assert!(v == XDP_PASS || v == XDP_DROP, "unexpected action {v}");
                    if seen[i].verdicts.last() != Some(&v) {
                        seen[i].verdicts.push(v);
                    }
                    seen[i].runs += 1;
                }
            }
            seen
        });
        Self { stop, thread }
    }

    pub fn stop(self) -> Vec<Probed> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("prober")
    }
}
