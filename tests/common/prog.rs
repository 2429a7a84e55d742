//! One harness for BPF_PROG_TEST_RUN on a loaded or pinned XDP program.

use aya::programs::{TestRun as _, TestRunOptions, TestRunResult, Xdp};
use regionwall::datapath::Datapath;

/// Runs `prog` on `frame`, `repeat` times in the kernel.
pub fn run(prog: &Xdp, frame: &[u8], repeat: u32) -> TestRunResult {
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..TestRunOptions::default()
    })
    .unwrap_or_else(|e| panic!("test_run failed: {e:?}"))
}

/// The verdict (XDP return code) of `prog` on `frame`.
pub fn verdict(prog: &Xdp, frame: &[u8]) -> u32 {
    run(prog, frame, 1).return_value
}

/// The verdict of the datapath's enforcing program on `frame`.
pub fn verdict_of(dp: &Datapath, frame: &[u8]) -> u32 {
    verdict(dp.program().expect("program"), frame)
}

/// Runs `prog` once on `frame` with `out` receiving the frame as the
/// program left it; returns the verdict.
pub fn run_into(prog: &Xdp, frame: &[u8], out: &mut [u8]) -> u32 {
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(out),
        ..TestRunOptions::default()
    })
    .unwrap_or_else(|e| panic!("test_run failed: {e:?}"))
    .return_value
}

/// Runs `prog` once on `frame`; returns the verdict and the frame as the
/// program left it (grown, trimmed or rewritten).
pub fn run_out(prog: &Xdp, frame: &[u8]) -> (u32, Vec<u8>) {
    // Room for headers the program may push in front.
    let mut out = vec![0u8; frame.len() + 256];
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })
        .unwrap_or_else(|e| panic!("test_run failed: {e:?}"));
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}
