//! The process's resident memory while stages run, for the manifest: which stage set a run's
//! peak is what a data engineer sizing a machine (or `--memory-limit`) needs to know.
//!
//! One thread samples the resident set size every [`INTERVAL`] and raises the peak of every
//! stage running then. Stages of one level run side by side, so a stage's peak is the
//! process's while it ran, not its own share. Linux only (`/proc/self/status`); elsewhere
//! nothing is measured and the fields are absent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

/// How often the resident set is sampled: a peak shorter than this can be missed.
pub const INTERVAL: Duration = Duration::from_millis(20);

/// The peak resident bytes seen while something (a stage) is tracked.
#[derive(Debug)]
pub struct Tracked {
    peak: Arc<AtomicU64>,
}

impl Tracked {
    /// The peak so far, including the resident set now.
    pub fn peak(&self) -> u64 {
        if let Some(now) = resident_bytes() {
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// Starts tracking the resident set's peak from now; `None` where it cannot be read.
pub fn track() -> Option<Tracked> {
    let now = resident_bytes()?;
    let peak = Arc::new(AtomicU64::new(now));
    let peaks = sampler();
    peaks
        .live
        .lock()
        .expect("resident sampler lock")
        .push(Arc::downgrade(&peak));
    peaks.added.notify_one();
    Some(Tracked { peak })
}

/// The process's peak resident set since it started (`VmHWM`). The kernel raises it only at
/// some events (unmapping memory, say), so it can lag behind a sampled [`Tracked::peak`]: a
/// run's peak is the larger of the two.
pub fn process_peak_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|k| k * 1024)
}

fn resident_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|k| k * 1024)
}

/// A `kB` line of `/proc/self/status`.
fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib(&status, key)
}

fn parse_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// The peaks being raised, and how the sampling thread (started with the first) is woken
/// when there were none: it waits, not polls, while no stage runs (a long-lived process such
/// as a server spends most of its time so).
struct Peaks {
    live: Mutex<Vec<Weak<AtomicU64>>>,
    added: Condvar,
}

fn sampler() -> &'static Peaks {
    static PEAKS: OnceLock<&'static Peaks> = OnceLock::new();
    PEAKS.get_or_init(|| {
        let peaks: &'static Peaks = Box::leak(Box::new(Peaks {
            live: Mutex::new(Vec::new()),
            added: Condvar::new(),
        }));
        let spawned = std::thread::Builder::new()
            .name("segflow-resident".into())
            .spawn(move || {
                loop {
                    {
                        let mut live = peaks.live.lock().expect("resident sampler lock");
                        live.retain(|p| p.strong_count() > 0);
                        while live.is_empty() {
                            live = peaks.added.wait(live).expect("resident sampler lock");
                        }
                    }
                    std::thread::sleep(INTERVAL);
                    let live = peaks.live.lock().expect("resident sampler lock");
                    if let Some(now) = resident_bytes() {
                        for p in live.iter().filter_map(Weak::upgrade) {
                            p.fetch_max(now, Ordering::Relaxed);
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            // Peaks are then only read when a stage ends: still a lower bound.
            tracing::warn!("not sampling resident memory: {e}");
        }
        peaks
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse_to_kib() {
        let status = "Name:\tsegflow\nVmHWM:\t  204800 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(parse_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(parse_kib(status, "VmHWM:"), Some(204800));
        assert_eq!(parse_kib(status, "VmSwap:"), None);
        assert_eq!(parse_kib("VmRSS:\tlots\n", "VmRSS:"), None);
    }

    #[test]
    fn a_tracked_peak_sees_memory_touched_while_it_lives() {
        let Some(tracked) = track() else {
            return; // not Linux: nothing to measure
        };
        let before = tracked.peak();
        // 64 MiB written, so resident, and held past a few samples.
        let block = vec![1u8; 64 << 20];
        // The sampler sees it without being asked (a busy machine may delay it a while).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while tracked.peak.load(Ordering::Relaxed) < before + (48 << 20) {
            assert!(
                std::time::Instant::now() < deadline,
                "the sampler never saw 64 MiB"
            );
            std::thread::sleep(INTERVAL);
        }
        let during = tracked.peak();
        assert!(
            std::hint::black_box(&block)
                .iter()
                .step_by(4096)
                .all(|&b| b == 1)
        );
        drop(block);
        assert!(during >= before + (48 << 20), "{before} -> {during}");
        // The peak stays after the memory is freed.
        assert!(tracked.peak() >= during);
        assert!(process_peak_bytes().is_some());
    }
}
