//! Latency histograms and result output.

use std::path::Path;
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// Latency in microseconds, sharded so that thousands of receivers do not contend on one lock.
pub struct Latency {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Latency {
    pub fn new(shards: usize) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")))
            .collect();
        Latency { shards }
    }

    pub fn record(&self, shard: usize, micros: u64) {
        if let Ok(mut h) = self.shards[shard % self.shards.len()].lock() {
            h.saturating_record(micros.max(1));
        }
    }

    pub fn merged(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
        for s in &self.shards {
            if let Ok(h) = s.lock() {
                let _ = all.add(&*h);
            }
        }
        all
    }
}

/// p50, p99, p99.9 and max in milliseconds.
pub fn percentiles_ms(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    serde_json::json!({
        "count": h.len(),
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": h.max() as f64 / 1000.0,
    })
}

/// Prints the one-line summary and writes the JSON results where asked.
pub fn finish(summary: &str, results: &serde_json::Value, json: Option<&Path>) -> anyhow::Result<()> {
    println!("{summary}");
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(results)?)?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}
