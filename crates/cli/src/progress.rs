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
use segflow_core::stage::{Observer, RunInfo};
use serde_json::json;
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
            Status::Interrupted => "STOP",
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

/// Progress as JSON log events (`--log-format json`, docs/scheduling.md): `run_started`,
/// `stage_started`, `stage_progress` (every ten seconds while a stage writes), `stage_finished`,
/// `publish_started`, `published`, `warning`; `run_finished` comes from [`run_finished`].
pub struct JsonProgress {
    run_id: Mutex<Option<String>>,
    last_line: Mutex<Instant>,
}

impl JsonProgress {
    pub fn new() -> Self {
        JsonProgress {
            run_id: Mutex::new(None),
            last_line: Mutex::new(Instant::now()),
        }
    }

    fn emit(&self, level: &str, stage: Option<&str>, event: &str, fields: serde_json::Value) {
        let run_id = self.run_id.lock().expect("run id lock").clone();
        crate::log::event(level, run_id.as_deref(), stage, event, fields, String::new);
    }
}

impl Default for JsonProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl Observer for JsonProgress {
    fn run_started(&self, run: &RunInfo) {
        *self.run_id.lock().expect("run id lock") = Some(run.run_id.clone());
        crate::log::set_current_run(Some(&run.run_id));
        self.emit(
            "info",
            None,
            "run_started",
            json!({ "pipeline": run.pipeline, "pipeline_file": run.pipeline_file }),
        );
    }

    fn stage_started(&self, stage: &str, kind: &str) {
        *self.last_line.lock().expect("progress lock") = Instant::now();
        self.emit(
            "info",
            Some(stage),
            "stage_started",
            json!({ "kind": kind }),
        );
    }

    fn rows(&self, stage: &str, rows: u64) {
        let mut last = self.last_line.lock().expect("progress lock");
        if last.elapsed() >= HEARTBEAT {
            *last = Instant::now();
            drop(last);
            self.emit(
                "info",
                Some(stage),
                "stage_progress",
                json!({ "rows": rows }),
            );
        }
    }

    fn stage_finished(&self, r: &StageReport) {
        let level = match r.status {
            Status::Failed => "error",
            Status::Interrupted => "warn",
            _ => "info",
        };
        self.emit(
            level,
            Some(&r.id),
            "stage_finished",
            json!({
                "kind": r.kind,
                "status": r.status,
                "rows_in": r.rows_in,
                "rows_out": r.rows_out,
                "duration_ms": r.duration_ms,
                "error": r.error,
                "error_class": r.error_class,
            }),
        );
    }

    fn publish_started(&self, table: &str, url: &Url) {
        self.emit(
            "info",
            None,
            "publish_started",
            json!({ "table": table, "url": url.as_str() }),
        );
    }

    fn published(&self, p: &PublishReport) {
        self.emit(
            "info",
            None,
            "published",
            json!({ "table": p.table, "version": p.version, "rows": p.rows, "url": p.url }),
        );
    }

    fn warning(&self, stage: &str, message: &str) {
        self.emit(
            "warn",
            Some(stage),
            "warning",
            json!({ "message": message }),
        );
    }
}

/// The `run_finished` JSON event (nothing in text mode, where the summary says it).
pub fn run_finished(outcome: &RunOutcome) {
    let m = &outcome.manifest;
    crate::log::set_current_run(None);
    let level = match m.status {
        Status::Succeeded => "info",
        Status::Interrupted => "warn",
        _ => "error",
    };
    crate::log::event(
        level,
        Some(&m.run_id),
        None,
        "run_finished",
        json!({
            "status": m.status,
            "duration_ms": m.duration_ms,
            "manifest": outcome.manifest_url.as_ref().map(Url::as_str),
            "published": m.published.iter().map(|p| json!({
                "table": p.table, "version": p.version, "rows": p.rows,
            })).collect::<Vec<_>>(),
            "error": m.error,
            "error_class": m.error_class,
            "exit_code": m.error_class.map_or(0, |c| c.exit_code()),
        }),
        String::new,
    );
}

/// The end-of-run summary on stdout: segments and their sizes, published tables, time.
pub fn print_summary(outcome: &RunOutcome) {
    use std::fmt::Write as _;
    let m = &outcome.manifest;
    let mut out = String::new();
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
            let _ = writeln!(out, "{name} segments ({} customers):", thousands(total));
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
                let _ = writeln!(
                    out,
                    "  {segment:<width$} {:>12} {share:>6.1}%",
                    thousands(n)
                );
            }
        }
    }
    if !m.published.is_empty() {
        let _ = writeln!(out, "published:");
        for p in &m.published {
            let _ = writeln!(
                out,
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
    let _ = writeln!(
        out,
        "run {} {status} in {:.1}s{}",
        m.run_id,
        m.duration_ms as f64 / 1000.0,
        outcome
            .manifest_url
            .as_ref()
            .map(|u| format!("; manifest: {u}"))
            .unwrap_or_default()
    );
    // A run that published is not failed by a reader that went away.
    let _ = crate::out::emit(&out);
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
