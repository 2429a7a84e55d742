//! The bulk counter reads (`BPF_MAP_LOOKUP_BATCH`) equal the per-key reads
//! exactly, on maps populated with different values on every CPU.

use aya::maps::{Map, PerCpuArray, PerCpuValues};
use regionwall::{
    datapath::Datapath,
    pin::{PinDir, PinnedMaps},
    readings::{PerKey, Readings as _},
};
use regionwall_common::{
    Bucket, COUNTERS, COUNTRY_STRIDE, MAX_DEVICES, TrafficCounter, VERDICTS, country_slot,
    rate_slot, traffic_slot,
};
use regionwall_testkit::{pins::PinRoot, rng::Rng};

fn cpus() -> usize {
    aya::util::nr_cpus().map_or(1, |n| n.get() as usize)
}

/// Writes `value(cpu)` on every CPU of entry `i` of the pinned per-CPU
/// array `name`.
fn set<V: aya::Pod>(pins: &PinDir, name: &str, i: u32, value: impl Fn(u64) -> V) {
    let map = Map::PerCpuArray(pins.open_map(name).expect("pinned map"));
    let mut arr: PerCpuArray<_, V> = PerCpuArray::try_from(map).expect("per-CPU array");
    let values: Vec<V> = (0..cpus() as u64).map(value).collect();
    arr.set(i, PerCpuValues::try_from(values).expect("one per CPU"), 0)
        .expect("set");
}

#[test]
fn bulk_reads_equal_per_key_reads() {
    let root = PinRoot::new();
    let pins = PinDir::new(root.path(), "rwmet0");
    pins.create().expect("pin dir");
    let mut dp = Datapath::load().expect("load (root?)");
    dp.pin(&pins).expect("pin");
    let stride = dp.control().expect("control").region_stride;

    // Sparse slots over every device, the last country and the last
    // verdict included, and values that differ per CPU, so a wrong
    // per-CPU stride or a wrong index shows.
    let mut rng = Rng(0x5eed_0016);
    let mut country_total = 0u64;
    let mut country_slots = vec![
        country_slot(0, 0, 0),
        country_slot(MAX_DEVICES - 1, COUNTRY_STRIDE - 1, VERDICTS - 1),
    ];
    country_slots.extend((0..2000).map(|_| {
        let d = u32::try_from(rng.below(u64::from(MAX_DEVICES))).expect("u32");
        let c = u32::try_from(rng.below(u64::from(COUNTRY_STRIDE))).expect("u32");
        let v = u32::try_from(rng.below(u64::from(VERDICTS))).expect("u32");
        country_slot(d, c, v)
    }));
    country_slots.sort_unstable();
    country_slots.dedup();
    for &i in &country_slots {
        set(&pins, "COUNTRY_TRAFFIC", i, |cpu| TrafficCounter {
            packets: u64::from(i) + 1 + cpu * 1000,
            bytes: (u64::from(i) + 1) * 60 + cpu,
        });
        country_total += (0..cpus() as u64)
            .map(|cpu| u64::from(i) + 1 + cpu * 1000)
            .sum::<u64>();
    }
    for d in [0, 7, MAX_DEVICES - 1] {
        for r in [0, stride - 1] {
            set(&pins, "TRAFFIC", traffic_slot(d, r, 1, stride), |cpu| {
                TrafficCounter {
                    packets: u64::from(d) + 3 + cpu,
                    bytes: 100 + cpu,
                }
            });
            set(&pins, "RATE_LIMIT", rate_slot(d, r, stride), |cpu| Bucket {
                credit_ns: 5,
                last_ns: 6,
                suppressed: u64::from(r) + 1 + cpu * 7,
            });
        }
    }
    for k in 0..COUNTERS {
        set(&pins, "COUNTERS_MAP", k, |cpu| u64::from(k) * 10 + cpu);
    }

    let maps = PinnedMaps::open(&pins).expect("open pins");
    let per_key = PerKey(&maps);
    let bulk = maps.country_traffic(MAX_DEVICES).expect("bulk");
    assert_eq!(bulk, per_key.country_traffic(MAX_DEVICES).expect("per key"));
    assert_eq!(bulk.len(), country_slots.len());
    assert_eq!(
        bulk.iter().map(|r| r.counter.packets).sum::<u64>(),
        country_total
    );
    assert_eq!(
        (bulk[0].device, bulk[0].region),
        (0, 0),
        "the first slot is device 0, no country"
    );
    let last = bulk.last().expect("rows");
    assert_eq!(
        (last.device, last.region, last.verdict.kernel()),
        (MAX_DEVICES - 1, COUNTRY_STRIDE - 1, VERDICTS - 1)
    );
    // A prefix: only the first devices.
    assert_eq!(
        maps.country_traffic(8).expect("bulk"),
        per_key.country_traffic(8).expect("per key")
    );
    let traffic = maps.traffic(MAX_DEVICES).expect("bulk");
    assert_eq!(traffic, per_key.traffic(MAX_DEVICES).expect("per key"));
    assert_eq!(traffic.len(), 6);
    let suppressed = maps.suppressed(MAX_DEVICES).expect("bulk");
    assert_eq!(
        suppressed,
        per_key.suppressed(MAX_DEVICES).expect("per key")
    );
    assert_eq!(suppressed.len(), 6);
    assert_eq!(
        maps.counters().expect("bulk"),
        per_key.counters().expect("per key")
    );
    assert_eq!(
        maps.counters().expect("bulk")[1],
        (0..cpus() as u64).map(|cpu| 10 + cpu).sum::<u64>()
    );
    drop(maps);
    drop(dp);
}
