//! What segflow says on stderr: text for people, or `--log-format json` (`SEGFLOW_LOG_FORMAT`)
//! for schedulers and log pipelines: one JSON object per line, every line, errors and progress
//! included. The JSON schema is versioned (`v`) and documented in docs/scheduling.md:
//!
//! ```json
//! {"v":1,"ts":"2026-12-07T09:00:00.123Z","level":"info","run_id":"20261207T090000Z-1a2b3c4d",
//!  "stage":"rfm","event":"stage_finished","fields":{"rows_out":1000,"duration_ms":812}}
//! ```
//!
//! `run_id` and `stage` are null outside a run or a stage. Library log events (DataFusion,
//! Ballista, segflow's own `tracing` calls) are `event: "log"` with the text in
//! `fields.message`; they take their run and stage from the spans the runner opens.

use std::io::Write as _;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The version of the JSON log's layout: a field removed or changed in meaning bumps it.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

static FORMAT: OnceLock<Format> = OnceLock::new();

/// Secret values (credentials from the environment and the pipeline's `storage:` options):
/// blanked out of every line segflow writes, whoever formatted it.
static SECRETS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Adds secret values to blank out of everything printed from now on.
pub fn redact(values: Vec<String>) {
    let mut secrets = SECRETS.write().expect("secrets lock");
    secrets.extend(values);
    secrets.sort();
    secrets.dedup();
    // The longest first, so a secret that contains another is blanked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `text` with every secret value replaced by `******`.
pub fn redacted(text: &str) -> std::borrow::Cow<'_, str> {
    let secrets = SECRETS.read().expect("secrets lock");
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in secrets.iter() {
        out = out.replace(s.as_str(), "******");
    }
    std::borrow::Cow::Owned(out)
}

/// Stderr for the text log: each event (one `write` of the formatter) blanked of secrets.
struct RedactedStderr;

impl std::io::Write for RedactedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr()
            .lock()
            .write_all(redacted(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The run this process is running (one at a time; a backfill runs its periods in turn): the
/// `run_id` of events from tasks that libraries spawn outside the run's span.
static CURRENT_RUN: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Sets (or clears) the run that events without a run of their own belong to.
pub fn set_current_run(run_id: Option<&str>) {
    *CURRENT_RUN.lock().expect("current run lock") = run_id.map(str::to_string);
}

/// The format chosen at start (text until then).
pub fn format() -> Format {
    FORMAT.get().copied().unwrap_or(Format::Text)
}

/// Sets up logging: `filter` chooses the library events (`--log`), `format` the layout.
pub fn init(filter: &str, format: Format) {
    use tracing_subscriber::prelude::*;
    let _ = FORMAT.set(format);
    redact(segflow_core::storage::secret_values(&[]));
    // Ballista logs every session setting it sends or receives, values included, at trace and
    // debug level: the pipeline's storage secrets among them. That module (which logs nothing
    // at warn or above) stays at warn whatever `--log` asks for.
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| "warn".into())
        .add_directive(
            "ballista_core::extension=warn"
                .parse()
                .expect("a valid directive"),
        )
        // delta-rs warns on every use of `with_keep_versions` (`segflow vacuum` keeps the
        // published version's files with it), which says nothing to a user.
        .add_directive(
            "deltalake_core::operations::vacuum=error"
                .parse()
                .expect("a valid directive"),
        );
    match format {
        Format::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(|| RedactedStderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .init(),
        Format::Json => tracing_subscriber::registry()
            .with(JsonLayer.with_filter(filter))
            .init(),
    }
}

/// One line of the JSON log.
pub fn json_line(
    level: &str,
    run_id: Option<&str>,
    stage: Option<&str>,
    event: &str,
    fields: Map<String, Value>,
) -> String {
    json!({
        "v": SCHEMA_VERSION,
        "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "level": level,
        "run_id": run_id,
        "stage": stage,
        "event": event,
        "fields": fields,
    })
    .to_string()
}

fn write_line(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", redacted(line));
}

/// An event of segflow's own (progress, a result, an error): a JSON line in JSON mode, else
/// `text()` as a line (nothing when it is empty).
pub fn event(
    level: &str,
    run_id: Option<&str>,
    stage: Option<&str>,
    name: &str,
    fields: Value,
    text: impl FnOnce() -> String,
) {
    match format() {
        Format::Json => {
            let fields = match fields {
                Value::Object(m) => m,
                Value::Null => Map::new(),
                other => Map::from_iter([("value".to_string(), other)]),
            };
            write_line(&json_line(level, run_id, stage, name, fields));
        }
        Format::Text => {
            let text = text();
            if !text.is_empty() {
                write_line(&text);
            }
        }
    }
}

/// The run and stage a span stands for, kept in the span for the events inside it.
#[derive(Default)]
struct Scope {
    run_id: Option<String>,
    stage: Option<String>,
}

/// A `tracing` layer writing each event as a JSON log line.
struct JsonLayer;

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for JsonLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let scope = Scope {
            run_id: fields.take_str("run_id"),
            stage: fields.take_str("stage"),
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(scope);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut run_id = fields.take_str("run_id");
        let mut stage = fields.take_str("stage");
        // The innermost span that names a run or a stage.
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(s) = span.extensions().get::<Scope>() {
                    run_id = run_id.or_else(|| s.run_id.clone());
                    stage = stage.or_else(|| s.stage.clone());
                }
            }
        }
        if run_id.is_none() {
            run_id = CURRENT_RUN.lock().expect("current run lock").clone();
        }
        // Library events are all `log`; their own fields (delta-kernel's have an `event`
        // too) stay in `fields`.
        let meta = event.metadata();
        fields
            .0
            .insert("target".into(), Value::from(meta.target().to_string()));
        write_line(&json_line(
            &meta.level().as_str().to_ascii_lowercase(),
            run_id.as_deref(),
            stage.as_deref(),
            "log",
            fields.0,
        ));
    }
}

/// An event's or span's fields as JSON values.
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Fields {
    fn take_str(&mut self, name: &str) -> Option<String> {
        match self.0.remove(name)? {
            Value::String(s) => Some(s),
            other => Some(other.to_string()),
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_blanked_whoever_formatted_them() {
        redact(vec![
            "hunter2-secret".into(),
            "hunter2-secret-longer".into(),
        ]);
        let line = "AwsCredential { key_id: \"hunter2-secret-longer\" } and hunter2-secret";
        assert_eq!(
            redacted(line),
            "AwsCredential { key_id: \"******\" } and ******"
        );
        assert!(matches!(
            redacted("nothing here"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_line_has_every_key_of_the_schema() {
        let line = json_line(
            "info",
            Some("r1"),
            None,
            "stage_finished",
            Map::from_iter([("rows_out".to_string(), Value::from(3))]),
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = ["v", "ts", "level", "run_id", "stage", "event", "fields"];
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(v["v"], SCHEMA_VERSION);
        assert_eq!(v["stage"], Value::Null);
        assert_eq!(v["fields"]["rows_out"], 3);
        assert!(!line.contains('\n'));
    }
}
