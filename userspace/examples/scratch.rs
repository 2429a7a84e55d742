use std::time::Instant;
fn main() {
    let p =
        regionwall::policy::parse_file(std::path::Path::new("target/bench/tables/1M/policy.toml"))
            .unwrap();
    let t = Instant::now();
    let mut n = 0;
    for r in &p.regions {
        let (a, b) = r.merged();
        n += a.len() + b.len();
    }
    println!("merged {n} in {:?}", t.elapsed());
    let t = Instant::now();
    let c = regionwall::compile::compile(&p).unwrap();
    println!("compile {:?}", t.elapsed());
    let t = Instant::now();
    let f = regionwall::fib::Fib::build(
        &c.v4,
        &c.v6,
        regionwall::fib::Capacity {
            slots: 1 << 23,
            ranges: 1 << 22,
            long: 1 << 16,
        },
    )
    .unwrap();
    println!(
        "fib {:?}: {} slots {} ranges {} splits",
        t.elapsed(),
        f.slots.len(),
        f.ranges.len(),
        f.splits
    );
}
