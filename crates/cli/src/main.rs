//! `segflow`: the command line. The only crate that knows every stage crate.
//!
//! Exit codes (documented in the README): 0 success; 1 the run failed (bad data, a failed
//! check, storage); 2 the pipeline or the command line is invalid (nothing was read);
//! 130 interrupted.

mod backfill;
mod cluster;
mod dirty;
mod generate;
mod progress;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use segflow_cli::registry;
use segflow_core::{Plan, runner, session};

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
    /// List the stage kinds this binary knows.
    Stages,
    /// Write a realistic, seeded CRM export (the four input CSV files).
    Generate(generate::Args),
    /// Run a Ballista scheduler that knows segflow's plans, for `run --engine
    /// ballista://HOST:PORT`.
    Scheduler(cluster::SchedulerArgs),
    /// Run a Ballista executor for a `segflow scheduler`.
    Executor(cluster::ExecutorArgs),
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

/// Exit code for an invalid pipeline or command line.
const EXIT_INVALID: u8 = 2;
/// Exit code for a run that failed.
const EXIT_FAILED: u8 = 1;
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Ballista logs every session setting it sends or receives, values included, at trace and
    // debug level: the pipeline's storage secrets among them. That module (which logs nothing
    // at warn or above) stays at warn whatever `--log` asks for.
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| "warn".into())
        .add_directive(
            "ballista_core::extension=warn"
                .parse()
                .expect("a valid directive"),
        );
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    runtime.block_on(async {
        match cli.command {
            // A scheduler or executor stops on Ctrl-C or SIGTERM by itself (an executor lets
            // its running tasks finish first).
            c @ (Command::Scheduler(_) | Command::Executor(_)) => dispatch(c).await,
            c => tokio::select! {
                code = dispatch(c) => code,
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("interrupted: published tables keep their previous version");
                    ExitCode::from(EXIT_INTERRUPTED)
                }
            },
        }
    })
}

async fn dispatch(command: Command) -> ExitCode {
    let result = match command {
        Command::Run {
            pipeline,
            vars,
            keep_work,
            full_refresh,
            target_partitions,
            memory_limit,
            engine,
        } => {
            let options = session::SessionOptions {
                target_partitions,
                memory_limit_bytes: memory_limit,
            };
            let run_options = runner::RunOptions {
                keep_work,
                full_refresh,
            };
            return run(&pipeline, &vars, &run_options, &options, engine.as_deref()).await;
        }
        Command::Scheduler(args) => return cluster::scheduler(args).await,
        Command::Executor(args) => return cluster::executor(args).await,
        Command::Validate { pipeline, vars } => load(&pipeline, &vars).map(|plan| {
            let publishes: usize = plan.stages.iter().filter(|s| s.outputs.is_empty()).count();
            println!(
                "{}: valid: {} stages, {} tables, {} publishing stage(s)",
                pipeline.display(),
                plan.stages.len(),
                plan.stages.iter().map(|s| s.outputs.len()).sum::<usize>(),
                publishes
            );
        }),
        Command::Plan { pipeline, vars } => load(&pipeline, &vars).map(|plan| print_plan(&plan)),
        Command::Backfill(args) => return backfill::run(args).await,
        Command::Stages => {
            for f in registry().factories() {
                println!("{:<16} {}", f.kind(), f.summary());
            }
            Ok(())
        }
        Command::Generate(args) => {
            return match tokio::task::spawn_blocking(move || generate::run(&args)).await {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(EXIT_FAILED)
                }
                Err(e) => {
                    eprintln!("error: generator crashed: {e}");
                    ExitCode::from(EXIT_FAILED)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

fn load(pipeline: &Path, vars: &[(String, String)]) -> Result<Plan, segflow_core::Error> {
    Plan::load(pipeline, vars, &registry())
}

fn print_plan(plan: &Plan) {
    println!("pipeline {} ({})", plan.name, plan.file.display());
    println!("runs: {}", plan.runs);
    for (i, s) in plan.stages.iter().enumerate() {
        println!("{:>2}. {} [{}]", i + 1, s.spec.id, s.spec.kind);
        if !s.inputs.is_empty() {
            println!("      reads:  {}", s.inputs.join(", "));
        }
        if !s.outputs.is_empty() {
            println!("      writes: {}", s.outputs.join(", "));
        }
        for line in s.stage.describe() {
            println!("      {line}");
        }
        for c in &s.spec.checks {
            println!("      check:  {}", c.name());
        }
    }
}

async fn run(
    pipeline: &Path,
    vars: &[(String, String)],
    run_options: &runner::RunOptions,
    options: &session::SessionOptions,
    engine: Option<&str>,
) -> ExitCode {
    let plan = match load(pipeline, vars) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let engine = match cluster::Engine::resolve(engine, &plan) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let ctx = match engine
        .session(options)
        .await
        .context("setting up the query engine")
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let observer = progress::Progress::new(plan.stages.len());
    let outcome = runner::run(&ctx, &plan, &observer, run_options).await;
    progress::print_summary(&outcome);
    match outcome.error {
        None => ExitCode::SUCCESS,
        Some(e) => {
            eprintln!("error: {}", runner::error_chain(&e));
            ExitCode::from(if e.is_spec_error() {
                EXIT_INVALID
            } else {
                EXIT_FAILED
            })
        }
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
