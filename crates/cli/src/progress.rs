//! What a person (or a scheduler's log) sees while a pipeline runs.
//!
//! On a terminal each running stage shows a spinner with the rows written so far. Without a
//! terminal (cron, Airflow) the spinner is hidden, each finished stage prints one line, and a
//! stage that runs long prints its row count every ten seconds so the log shows it is alive.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use segflow_core::manifest::{PublishReport, StageReport, Status};
use segflow_core::runner::RunOutcome;
use segflow_core::stage::Observer;
use url::Url;

pub struct Progress {
    total: usize,
    state: Mutex<State>,
}

struct State {
    index: usize,
    bar: Option<ProgressBar>,
    last_line: Instant,
}

const HEARTBEAT: Duration = Duration::from_secs(10);

impl Progress {
    pub fn new(total: usize) -> Self {
        Progress {
            total,
            state: Mutex::new(State {
                index: 0,
                bar: None,
                last_line: Instant::now(),
            }),
        }
    }
}

fn is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

impl Observer for Progress {
    fn stage_started(&self, stage: &str, kind: &str) {
        let mut s = self.state.lock().expect("progress lock");
        s.index += 1;
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {msg} {elapsed}")
                .expect("valid template"),
        );
        bar.set_prefix(format!("[{}/{}] {stage} ({kind})", s.index, self.total));
        bar.enable_steady_tick(Duration::from_millis(120));
        s.bar = Some(bar);
        s.last_line = Instant::now();
    }

    fn rows(&self, stage: &str, rows: u64) {
        let mut s = self.state.lock().expect("progress lock");
        if let Some(bar) = &s.bar {
            bar.set_message(format!("{} rows", thousands(rows)));
        }
        if !is_terminal() && s.last_line.elapsed() >= HEARTBEAT {
            eprintln!("      {stage}: {} rows so far", thousands(rows));
            s.last_line = Instant::now();
        }
    }

    fn stage_finished(&self, r: &StageReport) {
        let mut s = self.state.lock().expect("progress lock");
        if let Some(bar) = s.bar.take() {
            bar.finish_and_clear();
        }
        let mark = match r.status {
            Status::Succeeded => "ok  ",
            Status::Failed => "FAIL",
            Status::Skipped => "skip",
        };
        let rows = if r.outputs.is_empty() {
            String::new()
        } else {
            format!("{} rows", thousands(r.rows_out))
        };
        eprintln!(
            "{mark} [{}/{}] {:<26} {:<14} {:>14} {:>8}",
            s.index,
            self.total,
            r.id,
            r.kind,
            rows,
            format!("{:.1}s", r.duration_ms as f64 / 1000.0)
        );
    }

    fn publish_started(&self, table: &str, url: &Url) {
        eprintln!("     publishing {table} -> {url}");
    }

    fn published(&self, p: &PublishReport) {
        eprintln!(
            "ok   published {} v{} ({} rows)",
            p.table,
            p.version,
            thousands(p.rows)
        );
    }

    fn warning(&self, stage: &str, message: &str) {
        let s = self.state.lock().expect("progress lock");
        match &s.bar {
            Some(bar) => bar.println(format!("warn {stage}: {message}")),
            None => eprintln!("warn {stage}: {message}"),
        }
    }
}

/// The end-of-run summary on stdout: segments and their sizes, published tables, time.
pub fn print_summary(outcome: &RunOutcome) {
    let m = &outcome.manifest;
    for stage in &m.stages {
        for (key, value) in &stage.metrics {
            let Some(name) = key.strip_suffix("_segments") else {
                continue;
            };
            let Ok(counts) = serde_json::from_value::<BTreeMap<String, u64>>(value.clone()) else {
                continue;
            };
            let total: u64 = counts.values().sum();
            let mut rows: Vec<_> = counts.into_iter().collect();
            rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            println!("{name} segments ({} customers):", thousands(total));
            let width = rows
                .iter()
                .map(|r| r.0.len() + 1)
                .max()
                .unwrap_or(0)
                .max(22);
            for (segment, n) in rows {
                let share = if total == 0 {
                    0.0
                } else {
                    100.0 * n as f64 / total as f64
                };
                println!("  {segment:<width$} {:>12} {share:>6.1}%", thousands(n));
            }
        }
    }
    if !m.published.is_empty() {
        println!("published:");
        for p in &m.published {
            println!(
                "  {:<22} v{:<4} {:>12} rows  {}",
                p.table,
                p.version,
                thousands(p.rows),
                p.url
            );
        }
    }
    let status = match m.status {
        Status::Succeeded => "succeeded",
        _ => "FAILED",
    };
    println!(
        "run {} {status} in {:.1}s{}",
        m.run_id,
        m.duration_ms as f64 / 1000.0,
        outcome
            .manifest_url
            .as_ref()
            .map(|u| format!("; manifest: {u}"))
            .unwrap_or_default()
    );
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_separators() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(1234567), "1,234,567");
        assert_eq!(super::thousands(100), "100");
    }
}
