//! Verdicts of the XDP program on crafted frames, through BPF_PROG_TEST_RUN.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun as _, TestRunOptions};
use common::frames::*;
use regionwall::datapath::Datapath;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn run(dp: &Datapath, frame: &[u8]) -> u32 {
    let prog = dp.program().expect("program");
    prog.test_run(TestRunOptions { data_in: Some(frame), ..TestRunOptions::default() })
        .unwrap_or_else(|e| panic!("test_run failed: {e:?}"))
        .return_value
}

const POLICY: &str = r#"
[regions.blocked]
cidrs = ["198.51.100.0/24", "2001:db8:bad::/48"]

[[rules]]
name = "block-blocked"
devices = ["default"]
block = ["blocked"]
"#;

#[test]
fn smoke() {
    let (dp, _) = common::datapath_with(POLICY);
    let mac = [2, 0, 0, 0, 0, 1];
    let f = ethernet(mac, &[], ETH_P_IP, &ipv4(Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(198, 51, 100, 7), 17, 0, 0, &udp(1, 2, b"x")));
    assert_eq!(run(&dp, &f), XDP_DROP);
    let f = ethernet(mac, &[], ETH_P_IP, &ipv4(Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(203, 0, 113, 7), 17, 0, 0, &udp(1, 2, b"x")));
    assert_eq!(run(&dp, &f), XDP_PASS);
    let f = ethernet(mac, &[], ETH_P_IPV6, &ipv6("2001:db8:1::10".parse().unwrap(), "2001:db8:bad::1".parse::<Ipv6Addr>().unwrap(), &[], 17, &udp(1, 2, b"x")));
    assert_eq!(run(&dp, &f), XDP_DROP);
}
