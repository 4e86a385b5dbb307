//! Where a run's plans run (`--engine`), and the cluster's own processes: `segflow scheduler`
//! and `segflow executor`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use segflow_core::Plan;
use segflow_core::datafusion::prelude::SessionContext;
use segflow_core::session::{self, SessionOptions};
use segflow_distributed::{ClusterUrl, ExecutorOptions, SchedulerOptions};

use crate::out;

/// Where a run's plans run.
#[derive(Debug, Clone)]
pub enum Engine {
    /// This process (DataFusion, embedded).
    Local,
    /// A Ballista cluster of `segflow scheduler` and `segflow executor` processes.
    Cluster(ClusterUrl),
}

impl Engine {
    /// The engine `--engine` (or `SEGFLOW_ENGINE`) names, else the pipeline's `engine:`, else
    /// local. The message of an error says what to write instead.
    pub fn resolve(flag: Option<&str>, plan: &Plan) -> Result<Engine, String> {
        let (text, from) = match (flag, plan.engine.as_deref()) {
            (Some(f), _) => (f, "--engine".to_string()),
            (None, Some(e)) => (e, format!("{}: `engine:`", plan.file.display())),
            (None, None) => return Ok(Engine::Local),
        };
        match text.trim() {
            "" | "local" => Ok(Engine::Local),
            other => ClusterUrl::parse(other)
                .map(Engine::Cluster)
                .map_err(|e| format!("{from}: {e}")),
        }
    }

    /// A session whose plans run on this engine.
    pub async fn session(
        &self,
        options: &SessionOptions,
    ) -> Result<SessionContext, segflow_distributed::Error> {
        Ok(match self {
            Engine::Local => session::new_session(options)?,
            Engine::Cluster(url) => {
                segflow_distributed::connect(url, options, Duration::from_secs(20)).await?
            }
        })
    }
}

/// `segflow scheduler`.
#[derive(clap::Args)]
pub struct SchedulerArgs {
    /// Address to listen on; port 0 takes a free port. The address is printed once the
    /// scheduler listens: `segflow scheduler listening on HOST:PORT`.
    #[arg(long, default_value = "127.0.0.1:50050")]
    bind: SocketAddr,
    /// The host name executors and clients use to reach this scheduler (default: the bind
    /// address).
    #[arg(long)]
    external_host: Option<String>,
    /// Seconds without a heartbeat after which an executor counts as lost and its work is
    /// rerun elsewhere.
    #[arg(long, default_value_t = 60)]
    executor_timeout: u64,
    /// Times a task may fail before its job fails.
    #[arg(long, default_value_t = 4)]
    task_max_failures: usize,
}

/// `segflow executor`.
#[derive(clap::Args)]
pub struct ExecutorArgs {
    /// The scheduler to register with, HOST:PORT.
    #[arg(long)]
    scheduler: String,
    /// Address to serve results and shuffle data on (Arrow Flight); the next port takes the
    /// scheduler's task calls.
    #[arg(long, default_value = "127.0.0.1:50051")]
    bind: SocketAddr,
    /// The host name others use to reach this executor (default: the bind address).
    #[arg(long)]
    external_host: Option<String>,
    /// Directory for shuffle files and spills (default: a temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Tasks run at once (default: the number of cores).
    #[arg(long)]
    concurrent_tasks: Option<usize>,
    /// Memory for the running tasks together, e.g. 8GiB; operators spill to disk past it.
    #[arg(long, value_parser = crate::parse_size)]
    memory_limit: Option<usize>,
    /// Seconds between heartbeats to the scheduler.
    #[arg(long, default_value_t = 5)]
    heartbeat: u64,
    /// The id to register under (default: executor-HOST-PORT).
    #[arg(long)]
    id: Option<String>,
}

pub async fn scheduler(args: SchedulerArgs) -> ExitCode {
    let options = SchedulerOptions {
        bind: args.bind,
        external_host: args.external_host,
        executor_timeout: Duration::from_secs(args.executor_timeout),
        task_max_failures: args.task_max_failures,
    };
    let result = segflow_distributed::run_scheduler(options, |address| {
        use std::io::Write;
        println!("segflow scheduler listening on {address}");
        let _ = std::io::stdout().flush();
    })
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => out::fail(&e, e.class()),
    }
}

pub async fn executor(args: ExecutorArgs) -> ExitCode {
    let Some((host, port)) = args
        .scheduler
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
    else {
        return out::invalid(&format!(
            "--scheduler {}: not HOST:PORT (the address `segflow scheduler` listens on)",
            args.scheduler
        ));
    };
    let options = ExecutorOptions {
        scheduler_host: host,
        scheduler_port: port,
        bind: args.bind,
        external_host: args.external_host,
        work_dir: args.work_dir,
        concurrent_tasks: args.concurrent_tasks,
        memory_limit_bytes: args.memory_limit.map(|m| m as u64),
        heartbeat: Duration::from_secs(args.heartbeat),
        id: args.id,
    };
    match segflow_distributed::run_executor(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => out::fail(&e, e.class()),
    }
}
