//! Measures several closures in turns rather than one after the other, so a
//! machine that is busy in bursts slows them alike; criterion measures one
//! function at a time, which on a shared machine can put a burst on one side
//! of a comparison only.
//!
//! Each round runs every closure for one batch of iterations sized to take
//! about `batch`, in an order rotated every round; a closure's sample is its
//! batch time per iteration. The figure kept is the fastest sample: the code
//! measured is deterministic, so every slower sample is the same work plus
//! time the machine gave to something else (a median still carries that time
//! when other processes keep the cores busy).

use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub type Closure<'a> = Box<dyn FnMut() + 'a>;

/// One closure's per-iteration times, one per round, in nanoseconds.
pub struct Samples {
    pub name: String,
    pub ns: Vec<f64>,
}

impl Samples {
    pub fn fastest(&self) -> f64 {
        self.ns.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn median(&self) -> f64 {
        let mut values = self.ns.clone();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    }
}

pub fn measure(mut closures: Vec<(String, Closure<'_>)>, rounds: usize, batch: Duration) -> Vec<Samples> {
    let sizes: Vec<u32> = closures
        .iter_mut()
        .map(|(_, run)| {
            let started = Instant::now();
            run();
            let once = started.elapsed().max(Duration::from_nanos(1));
            let iterations = (batch.as_nanos() / once.as_nanos()).clamp(1, 1_000_000) as u32;
            (0..iterations).for_each(|_| run());
            iterations
        })
        .collect();
    let mut samples: Vec<Samples> =
        closures.iter().map(|(name, _)| Samples { name: name.clone(), ns: Vec::with_capacity(rounds) }).collect();
    let count = closures.len();
    for round in 0..rounds {
        for turn in 0..count {
            let index = (round + turn) % count;
            let run = &mut closures[index].1;
            let started = Instant::now();
            (0..sizes[index]).for_each(|_| run());
            samples[index].ns.push(started.elapsed().as_nanos() as f64 / f64::from(sizes[index]));
        }
    }
    for s in &samples {
        println!("{:>28}: fastest {:>12.0} ns, median {:>12.0} ns", s.name, s.fastest(), s.median());
    }
    samples
}

/// Samples as JSON: `{name: {"fastest_ns", "median_ns", "samples_ns"}}`.
pub fn to_json(samples: &[Samples]) -> Value {
    samples
        .iter()
        .map(|s| (s.name.clone(), json!({ "fastest_ns": s.fastest(), "median_ns": s.median(), "samples_ns": s.ns })))
        .collect()
}

/// Writes a bench's figures to `BENCH_DIR` (default `target/bench`) as `{name}.json`.
pub fn write(name: &str, figures: &Value) {
    let dir = std::env::var_os("BENCH_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench"), PathBuf::from);
    std::fs::create_dir_all(&dir).expect("a writable target directory");
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(figures).expect("serialisable")).expect("writable");
    println!("wrote {}", path.display());
}

/// Rounds per comparison: `BENCH_ROUNDS`, default `default`.
pub fn rounds(default: usize) -> usize {
    std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
