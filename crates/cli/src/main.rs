//! `segflow`: the command line. The only crate that knows every stage crate.
//!
//! Exit codes (docs/scheduling.md), from the class of the error (`segflow_core::ErrorClass`):
//! 0 success; 1 the run failed; 2 the pipeline or the command line is invalid (nothing was
//! read); 3 the data failed a check; 4 storage, network or the output's lease: retrying can
//! help; 130 interrupted.

mod backfill;
mod cluster;
mod dirty;
mod generate;
mod log;
mod out;
mod progress;
mod report;
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use segflow_cli::registry;
use segflow_core::{ErrorClass, Plan, runner, session};
use tokio_util::sync::CancellationToken;

/// glibc's malloc hands large freed blocks back to the kernel, so Arrow buffers allocated
/// batch after batch came back as fresh pages the kernel had to zero: perf on the release build
/// put 11% of an orders ingest in `clear_page_erms` and 5% more in page faults. mimalloc keeps
/// and reuses them; DataFusion's own CLI uses it for the same reason.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "segflow",
    version,
    about = "Customer segmentation pipelines on Apache DataFusion"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter, e.g. `info` or `segflow_core=debug` (also SEGFLOW_LOG).
    #[arg(long, global = true, env = "SEGFLOW_LOG", default_value = "warn")]
    log: String,
    /// `text` for people, `json` for machines: one JSON object per line on stderr, progress
    /// and errors included (docs/scheduling.md). Also SEGFLOW_LOG_FORMAT.
    #[arg(
        long,
        global = true,
        env = "SEGFLOW_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: log::Format,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline.
    Run {
        pipeline: PathBuf,
        /// Override a pipeline var: --var output=s3://bucket/segments
        #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// Keep the run's intermediate tables under <runs>/<run_id>/work.
        #[arg(long)]
        keep_work: bool,
        /// Rebuild incremental outputs (staging) from every input file, forgetting which
        /// files earlier runs ingested.
        #[arg(long)]
        full_refresh: bool,
        /// Another attempt of run RUN_ID, which did not succeed: stages whose fingerprint
        /// (inputs, SQL, params) is unchanged reuse its tables, the others run; then the run
        /// publishes as usual, committing nothing twice (docs/scheduling.md, "Resume").
        #[arg(long, value_name = "RUN_ID")]
        resume: Option<String>,
        /// Partitions (threads) per query; default: the number of cores.
        #[arg(long)]
        target_partitions: Option<usize>,
        /// Memory for query execution, e.g. 2GiB; operators spill to disk past it.
        #[arg(long, value_parser = parse_size)]
        memory_limit: Option<usize>,
        /// Where the plans run: `local` (this process) or `ballista://HOST:PORT` (a
        /// `segflow scheduler`); default: the pipeline's `engine:`, else local.
        #[arg(long, env = "SEGFLOW_ENGINE")]
        engine: Option<String>,
        #[command(flatten)]
        lease: LeaseArgs,
    },
    /// Check a pipeline without reading data: YAML, vars, stage graph, SQL files, params.
    Validate {
        pipeline: PathBuf,
        #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
    },
    /// Print the stages in run order, with their inputs and outputs.
    Plan {
        pipeline: PathBuf,
        #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
    },
    /// Run a pipeline once per as_of date over a range, oldest first, skipping dates a
    /// succeeded run already published (resumable).
    Backfill(backfill::Args),
    /// List the runs of an output, newest last, from their manifests (OUTPUT/_runs).
    Runs {
        /// The pipeline's output (a path or a URL such as s3://bucket/segments); its runs are
        /// under OUTPUT/_runs.
        output: String,
        /// How many of the newest runs to list.
        #[arg(long, default_value_t = 20)]
        last: usize,
        /// One JSON object per run, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Remove what runs leave behind, older than --older-than: data files no version needs
    /// (replaced, or written by failed runs and never committed; the version
    /// `_published.json` names is always kept) and the folders that runs which did not
    /// succeed keep for --resume. A dry run that lists them unless --yes.
    Vacuum {
        /// The pipeline's output (a path or a URL); its runs are under OUTPUT/_runs.
        output: String,
        /// Keep what is younger than this: 30m, 12h, 7d.
        #[arg(long, value_parser = parse_duration, default_value = "7d")]
        older_than: std::time::Duration,
        /// Delete; without it, only list what would be deleted.
        #[arg(long)]
        yes: bool,
    },
    /// List the stage kinds this binary knows.
    Stages,
    /// Write a realistic, seeded CRM export (the four input CSV files).
    Generate(generate::Args),
    /// Run a Ballista scheduler that knows segflow's plans, for `run --engine
    /// ballista://HOST:PORT`.
    Scheduler(cluster::SchedulerArgs),
    /// Run a Ballista executor for a `segflow scheduler`.
    Executor(cluster::ExecutorArgs),
    /// Write the HTML report of the pipeline's published run (what its `export.report` stage
    /// writes after a run), without running it.
    Report(report::Args),
    /// Serve the pipeline's published tables over Arrow Flight SQL (ADBC, JDBC, Power BI),
    /// read-only, each query on the tables of one run.
    Serve(serve::Args),
}

/// How a run takes its output's lease (docs/scheduling.md, "One run at a time").
#[derive(clap::Args, Clone)]
pub struct LeaseArgs {
    /// When another run holds the output, wait for it to end instead of exiting 4.
    #[arg(long)]
    wait: bool,
    /// How long the output's lease lasts unless renewed: a killed run's lease frees after
    /// this (renewed every third of it while the run lives).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    lease_ttl: std::time::Duration,
}

impl LeaseArgs {
    pub fn options(&self) -> segflow_core::lease::LeaseOptions {
        segflow_core::lease::LeaseOptions {
            ttl: self.lease_ttl,
            wait: self.wait,
        }
    }
}

/// `500ms`, `30s`, `5m`, `2h`, `7d`.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30s, 5m or 7d"))?;
    let secs = match unit {
        "ms" => return Ok(std::time::Duration::from_millis(n)),
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("`{s}`: unknown unit; use ms, s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 512MiB or 2GiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("`{s}`: unknown unit; use KiB, MiB or GiB")),
    };
    Ok((n * mult) as usize)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    log::init(&cli.log, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(ErrorClass::Failed.exit_code());
        }
    };
    runtime.block_on(async {
        match cli.command {
            // A scheduler, executor or server stops on Ctrl-C or SIGTERM by itself (an
            // executor lets its running tasks finish first, a server its running queries).
            c @ (Command::Scheduler(_) | Command::Executor(_) | Command::Serve(_)) => {
                dispatch(c, CancellationToken::new()).await
            }
            // A run stops at a signal, writes its manifest and exits 130.
            c @ (Command::Run { .. } | Command::Backfill(_)) => {
                let cancel = CancellationToken::new();
                cancel_on_signals(cancel.clone());
                dispatch(c, cancel).await
            }
            c => tokio::select! {
                code = dispatch(c, CancellationToken::new()) => code,
                _ = tokio::signal::ctrl_c() => ExitCode::from(ErrorClass::Interrupted.exit_code()),
            },
        }
    })
}

/// Cancels `cancel` at the first SIGINT or SIGTERM, so the run stops and says so in its
/// manifest; a second signal ends the process at once.
fn cancel_on_signals(cancel: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        for first in [true, false] {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            if !first {
                std::process::exit(ErrorClass::Interrupted.exit_code().into());
            }
            log::event(
                "warn",
                None,
                None,
                "interrupted",
                serde_json::json!({ "signal": name }),
                || {
                    format!(
                        "interrupted ({name}): stopping the run and writing its manifest; \
                         published tables keep their previous version (again to stop at once)"
                    )
                },
            );
            cancel.cancel();
        }
    });
}

async fn dispatch(command: Command, cancel: CancellationToken) -> ExitCode {
    match command {
        Command::Run {
            pipeline,
            vars,
            keep_work,
            full_refresh,
            resume,
            target_partitions,
            memory_limit,
            engine,
            lease,
        } => {
            let options = session::SessionOptions {
                target_partitions,
                memory_limit_bytes: memory_limit,
            };
            let run_options = runner::RunOptions {
                keep_work,
                full_refresh,
                cancel,
                lease: lease.options(),
                resume: None,
            };
            let engine = engine.as_deref();
            run(&pipeline, &vars, run_options, resume, &options, engine).await
        }
        Command::Scheduler(args) => cluster::scheduler(args).await,
        Command::Executor(args) => cluster::executor(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Validate { pipeline, vars } => match load(&pipeline, &vars) {
            Ok(plan) => {
                // Warnings go to stderr (JSON events with --log-format json); the pipeline is
                // still valid and the exit code 0.
                let mut warnings = 0;
                for st in &plan.stages {
                    for w in st.stage.warnings() {
                        warnings += 1;
                        log::event(
                            "warn",
                            None,
                            Some(&st.spec.id),
                            "validate_warning",
                            serde_json::json!({ "message": w }),
                            || format!("warning: stage `{}`: {w}", st.spec.id),
                        );
                    }
                }
                out::emit_result(&format!(
                    "{}: valid: {} stages, {} tables, {} publishing stage(s){}\n",
                    pipeline.display(),
                    plan.stages.len(),
                    plan.stages.iter().map(|s| s.outputs.len()).sum::<usize>(),
                    plan.stages.iter().filter(|s| s.outputs.is_empty()).count(),
                    match warnings {
                        0 => String::new(),
                        n => format!(", {n} warning(s)"),
                    }
                ))
            }
            Err(e) => out::fail(&e, e.class()),
        },
        Command::Plan { pipeline, vars } => match load(&pipeline, &vars) {
            Ok(plan) => out::emit_result(&describe_plan(&plan)),
            Err(e) => out::fail(&e, e.class()),
        },
        Command::Backfill(args) => backfill::run(args, cancel).await,
        Command::Report(args) => report::run(args).await,
        Command::Runs { output, last, json } => list_runs(&output, last, json).await,
        Command::Vacuum {
            output,
            older_than,
            yes,
        } => vacuum(&output, older_than, !yes).await,
        Command::Stages => out::emit_result(
            &registry()
                .factories()
                .map(|f| format!("{:<16} {}\n", f.kind(), f.summary()))
                .collect::<String>(),
        ),
        Command::Generate(args) => {
            match tokio::task::spawn_blocking(move || generate::run(&args)).await {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => out::fail(e.as_ref(), ErrorClass::Failed),
                Err(e) => out::fail(&e, ErrorClass::Failed),
            }
        }
    }
}

/// Loads a pipeline; its `storage:` secrets are blanked out of everything printed after.
fn load(pipeline: &Path, vars: &[(String, String)]) -> Result<Plan, segflow_core::Error> {
    let plan = Plan::load(pipeline, vars, &registry())?;
    log::redact(segflow_core::storage::secret_values(&plan.storage));
    Ok(plan)
}

/// The stages in run order, with what they read and write.
fn describe_plan(plan: &Plan) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "pipeline {} ({})", plan.name, plan.file.display());
    let _ = writeln!(s, "runs: {}", plan.runs);
    for (i, st) in plan.stages.iter().enumerate() {
        let _ = writeln!(s, "{:>2}. {} [{}]", i + 1, st.spec.id, st.spec.kind);
        if !st.inputs.is_empty() {
            let _ = writeln!(s, "      reads:  {}", st.inputs.join(", "));
        }
        if !st.outputs.is_empty() {
            let _ = writeln!(s, "      writes: {}", st.outputs.join(", "));
        }
        for line in st.stage.describe() {
            let _ = writeln!(s, "      {line}");
        }
        for c in &st.spec.checks {
            let _ = writeln!(s, "      check:  {}", c.name());
        }
    }
    s
}

/// The runs folder of the default layout under an output given on the command line:
/// `OUTPUT/_runs`.
fn runs_of(output: &str) -> Result<url::Url, ExitCode> {
    segflow_core::storage::parse_location(output)
        .map(|u| segflow_core::storage::join(&segflow_core::storage::as_dir(&u), "_runs"))
        .map_err(|e| out::fail(&e, ErrorClass::Invalid))
}

/// `segflow vacuum`.
async fn vacuum(output: &str, older_than: std::time::Duration, dry_run: bool) -> ExitCode {
    use segflow_core::publish;
    let runs = match runs_of(output) {
        Ok(u) => u,
        Err(code) => return code,
    };
    let done = async {
        let ctx = session::new_session(&session::SessionOptions::default())?;
        publish::vacuum::vacuum(&ctx, &runs, older_than, dry_run).await
    };
    let report = match done.await {
        Ok(r) => r,
        Err(e) => return out::fail(&e, e.class()),
    };
    let verb = if dry_run { "would delete" } else { "deleted" };
    let mut text = String::new();
    for (table, files) in &report.tables {
        text.push_str(&format!("{table:<24} {verb} {} data files\n", files.len()));
        for f in files.iter().take(3) {
            text.push_str(&format!("    {f}\n"));
        }
    }
    text.push_str(&format!(
        "work folders of ended runs: {verb} {}\n",
        report.work_folders.len()
    ));
    for f in &report.work_folders {
        text.push_str(&format!("    {f}\n"));
    }
    if dry_run {
        text.push_str("dry run: nothing was deleted; pass --yes to delete\n");
    }
    out::emit_result(&text)
}

/// `segflow runs`.
async fn list_runs(output: &str, last: usize, json: bool) -> ExitCode {
    use segflow_core::manifest;
    let runs = match runs_of(output) {
        Ok(u) => u,
        Err(code) => return code,
    };
    let listed = async {
        let ctx = session::new_session(&session::SessionOptions::default())?;
        manifest::list_runs(&ctx, &runs).await
    };
    let all = match listed.await {
        Ok(r) => r,
        Err(e) => return out::fail(&e, e.class()),
    };
    let shown = &all[all.len().saturating_sub(last)..];
    let text = if json {
        shown
            .iter()
            .map(|r| serde_json::to_string(r).unwrap_or_default() + "\n")
            .collect()
    } else if shown.is_empty() {
        format!("no runs under {runs}\n")
    } else {
        let mut s = format!(
            "{:<26} {:<12} {:<10} {:>9} {:>9}  {}\n",
            "RUN", "STATUS", "CLASS", "SECONDS", "PUBLISHED", "PIPELINE / ERROR"
        );
        for r in shown {
            let secs = r
                .duration_ms
                .map_or("-".into(), |ms| format!("{:.1}", ms as f64 / 1000.0));
            let what = match &r.error {
                Some(e) => format!(
                    "{}: {}",
                    r.pipeline,
                    e.chars().take(120).collect::<String>()
                ),
                None => r.pipeline.clone(),
            };
            s.push_str(&format!(
                "{:<26} {:<12} {:<10} {:>9} {:>9}  {what}\n",
                r.run_id,
                r.status,
                r.error_class.as_deref().unwrap_or("-"),
                secs,
                r.published
            ));
        }
        s
    };
    out::emit_result(&text)
}

async fn run(
    pipeline: &Path,
    vars: &[(String, String)],
    mut run_options: runner::RunOptions,
    resume: Option<String>,
    options: &session::SessionOptions,
    engine: Option<&str>,
) -> ExitCode {
    let plan = match load(pipeline, vars) {
        Ok(p) => p,
        Err(e) => return out::fail(&e, e.class()),
    };
    let engine = match cluster::Engine::resolve(engine, &plan) {
        Ok(e) => e,
        Err(e) => return out::invalid(&e),
    };
    let ctx = match engine.session(options).await {
        Ok(c) => c,
        Err(e) => return out::fail(&e, e.class()),
    };
    if let Some(run_id) = resume {
        match segflow_core::resume::open(&ctx, &plan, &run_id).await {
            Ok(r) => run_options.resume = Some(r),
            Err(e) => return out::fail(&e, e.class()),
        }
    }
    let observer: Box<dyn segflow_core::stage::Observer> = match log::format() {
        log::Format::Text => Box::new(progress::Progress::new(plan.stages.len())),
        log::Format::Json => Box::new(progress::JsonProgress::new()),
    };
    let outcome = runner::run(&ctx, &plan, observer.as_ref(), &run_options).await;
    progress::print_summary(&outcome);
    match &outcome.error {
        None => {
            progress::run_finished(&outcome);
            ExitCode::SUCCESS
        }
        // In JSON mode `run_finished` carries the error; in text mode the error line does.
        Some(e) => match log::format() {
            log::Format::Json => {
                progress::run_finished(&outcome);
                ExitCode::from(e.class().exit_code())
            }
            log::Format::Text => out::fail(e, e.class()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("512 MiB").unwrap(), 512 << 20);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn durations_parse() {
        use std::time::Duration;
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3w").is_err());
    }

    #[test]
    fn vars_parse() {
        assert_eq!(parse_var("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_var("=x").is_err());
        assert!(parse_var("novalue").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
