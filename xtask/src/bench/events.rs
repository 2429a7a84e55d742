//! The event path under a flood: one core runs the production program on a
//! blocked frame through BPF_PROG_TEST_RUN as fast as it can, the other
//! runs the controller's reader (`events::pump`: ring buffer -> bounded
//! queue) and a consumer. Every drop must end up consumed, dropped from the
//! full queue, or counted lost in the kernel: nothing unaccounted.

use std::{
    io::Write as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::programs::{TestRun as _, TestRunOptions};
use regionwall::{
    compile,
    datapath::{Datapath, Readings as _},
    events::{self, BootClock, Names, Record},
    policy,
};
use regionwall_common::Counter;
use regionwall_testkit::xdp::XDP_DROP;
use serde::Serialize;

/// Drops per run.
const DROPS: u32 = 1 << 22;
/// Program runs per test_run call.
const BURST: u32 = 1 << 16;

#[derive(Serialize, Default, Clone)]
pub struct EventRun {
    /// "count": events decoded and tallied per (rule, region), as a metrics
    /// consumer would; "json": named and formatted like `run --json`.
    pub consumer: String,
    pub drops: u64,
    pub seconds: f64,
    pub drops_per_sec: f64,
    pub consumed: u64,
    pub consumed_per_sec: f64,
    pub lost_in_kernel: u64,
    pub dropped_from_queue: u64,
    /// drops - (consumed + queue drops + kernel losses); must be 0.
    pub unaccounted: i64,
}

#[derive(Serialize, Default, Clone)]
pub struct EventResult {
    pub runs: Vec<EventRun>,
}

pub fn run() -> anyhow::Result<EventResult> {
    let mut out = EventResult::default();
    for json in [false, true] {
        out.runs.push(flood(json)?);
    }
    Ok(out)
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set);
    }
}

/// What the reader thread reports back.
#[derive(Clone)]
struct Shared {
    consumed: Arc<AtomicU64>,
    queue_dropped: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    last_event: Arc<std::sync::Mutex<Instant>>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            consumed: Arc::default(),
            queue_dropped: Arc::default(),
            done: Arc::default(),
            last_event: Arc::new(std::sync::Mutex::new(Instant::now())),
        }
    }
}

/// The controller's side on CPU 1: `events::pump` into a bounded queue and a
/// consumer that tallies (or names and formats) every event.
fn spawn_reader(
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    names: Names,
    json: bool,
    shared: &Shared,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    let Shared {
        consumed,
        queue_dropped,
        done,
        last_event,
    } = shared.clone();
    std::thread::spawn(move || -> anyhow::Result<()> {
        pin(1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel(65_536);
            let pump = tokio::spawn(events::pump(ring, tx, Arc::clone(&queue_dropped)));
            let clock = BootClock::now();
            let mut tally: std::collections::HashMap<(u16, u16), u64> =
                std::collections::HashMap::new();
            let mut sink = std::io::BufWriter::new(std::io::sink());
            let mut batch = Vec::with_capacity(1024);
            loop {
                let got = tokio::time::timeout(
                    Duration::from_millis(200),
                    rx.recv_many(&mut batch, 1024),
                )
                .await;
                match got {
                    Ok(0) => break,
                    Ok(n) => {
                        for ev in batch.drain(..) {
                            if json {
                                if let Some(record) = Record::new(&ev, &names, &clock, "lan0") {
                                    writeln!(sink, "{}", record.json())?;
                                }
                            } else {
                                *tally.entry((ev.rule, ev.region)).or_default() += 1;
                            }
                        }
                        consumed.fetch_add(n as u64, Ordering::Relaxed);
                        if let Ok(mut t) = last_event.lock() {
                            *t = Instant::now();
                        }
                    }
                    Err(_) if done.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
            pump.abort();
            Ok::<_, anyhow::Error>(())
        })
    })
}

fn flood(json: bool) -> anyhow::Result<EventRun> {
    let dir = std::env::temp_dir().join(format!("regionwall-bench-events-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("policy.toml");
    std::fs::write(
        &path,
        "[regions.doc]\ncidrs = [\"198.51.100.0/24\"]\n[[rules]]\nname = \"block-doc\"\ndevices = [\"default\"]\nblock = [\"doc\"]\n",
    )?;
    let policy = policy::parse_file(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let compiled = compile::compile(&policy)?;
    let mut dp = Datapath::load()?;
    dp.publish(&compiled, 1)?;
    let ring = dp.take_events()?;
    let mut names = Names::default();
    names.insert(1, Arc::new(compiled));

    let shared = Shared::default();
    let reader = spawn_reader(ring, names, json, &shared);

    pin(0);
    // 192.0.2.10 -> 198.51.100.7, UDP 443: blocked by the policy above.
    let frame = super::cost::frame(true);
    let program = dp.program()?;
    let started = Instant::now();
    let mut sent = 0;
    while sent < DROPS {
        let r = program
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                repeat: BURST,
                ..TestRunOptions::default()
            })
            .context("test_run")?;
        anyhow::ensure!(
            r.return_value == XDP_DROP,
            "the flood frame must be dropped"
        );
        sent += BURST;
    }
    let produced = started.elapsed();
    // Let the reader drain what the ring still holds.
    std::thread::sleep(Duration::from_millis(500));
    shared.done.store(true, Ordering::Relaxed);
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("consumer thread panicked"))??;
    let finished = shared
        .last_event
        .lock()
        .map_or(produced, |t| t.duration_since(started));
    let counters = dp.counters()?;
    let drops = counters[Counter::Frames as usize];
    let lost = counters[Counter::EventsLost as usize];
    let consumed = shared.consumed.load(Ordering::Relaxed);
    let queue_dropped = shared.queue_dropped.load(Ordering::Relaxed);
    let seconds = finished.as_secs_f64().max(produced.as_secs_f64());
    let unaccounted = i64::try_from(drops).unwrap_or(i64::MAX)
        - i64::try_from(consumed + queue_dropped + lost).unwrap_or(i64::MAX);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(EventRun {
        consumer: if json { "json" } else { "count" }.into(),
        drops,
        seconds,
        drops_per_sec: drops as f64 / produced.as_secs_f64(),
        consumed,
        consumed_per_sec: consumed as f64 / seconds,
        lost_in_kernel: lost,
        dropped_from_queue: queue_dropped,
        unaccounted,
    })
}
