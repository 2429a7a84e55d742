use regionwall::datapath::{Datapath, LoadOptions};
fn main() {
    let dp = Datapath::load_bench(LoadOptions {
        both_tables: true,
        ..LoadOptions::default()
    })
    .unwrap();
    let _ = dp;
    std::thread::sleep(std::time::Duration::from_secs(20));
}
