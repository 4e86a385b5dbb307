//! segflow's scheduler and executor: Ballista's, with segflow's codecs, plan nodes and object
//! stores. Ballista's stock binaries cannot run segflow's plans: they know neither its
//! operators nor its functions.
//!
//! ```text
//!  segflow run --engine ballista://H:P ──ExecuteQuery (logical plan, session settings)──┐
//!                                                                                      v
//!  segflow scheduler --bind H:P   plans it (segflow's planner: WriteFiles -> WriteExec),
//!                                 cuts it into stages at the shuffles, hands out tasks
//!                                                                                      │
//!  segflow executor --scheduler H:P (one or many)  <── tasks (physical plan fragments) ┘
//!     runs them with object stores built from its own environment and the job's
//!     `storage:` options; shuffle files under --work-dir; results served over Flight
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ballista::prelude::SessionConfigExt;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::extension::{
    ballista_aggregate_functions, ballista_scalar_functions, ballista_window_functions,
};
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use segflow_core::datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use segflow_core::datafusion::execution::{SessionState, SessionStateBuilder};
use segflow_core::datafusion::prelude::{SessionConfig, SessionContext};
use segflow_core::session::SessionOptions;
use segflow_core::storage::{StorageOptions, StoreRegistry};
use segflow_core::write::SegflowQueryPlanner;

use crate::codec::{LogicalCodec, PhysicalCodec};
use crate::error::{Error, Result};

/// The largest gRPC message between client, scheduler and executors. A task carries its
/// stage's plan, whose scans list their files: a month-partitioned staging table read by a
/// stage is a few megabytes of plan (6 MB for the default pipeline's events at 2,000
/// customers), past tonic's 4 MiB default.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// The configuration every job's session starts from, on the scheduler and the executors:
/// Ballista's, able to take segflow's storage options.
fn base_config() -> SessionConfig {
    SessionConfig::new_with_ballista()
        .with_information_schema(true)
        .with_option_extension(StorageOptions::default())
        .with_ballista_grpc_client_max_message_size(MAX_MESSAGE_BYTES)
}

/// The object stores a job's plans use in this process: built from this process's
/// environment and the job's `storage:` options ([`StoreRegistry`]).
fn job_runtime(
    config: &SessionConfig,
    temp: Option<&PathBuf>,
) -> segflow_core::datafusion::error::Result<Arc<RuntimeEnv>> {
    let mut runtime = RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(StoreRegistry::for_config(config)));
    if let Some(dir) = temp {
        runtime = runtime.with_temp_file_path(dir.clone());
    }
    runtime.build_arc()
}

/// The scheduler's session for a job: it plans segflow's nodes and reads the job's stores
/// (a listing of files, a Parquet footer) while planning.
fn scheduler_session(
    config: SessionConfig,
) -> segflow_core::datafusion::error::Result<SessionState> {
    let runtime = job_runtime(&config, None)?;
    Ok(SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_optimizer_rules(ballista_core::optimizer::ballista_default_optimizer_rules())
        .with_scalar_functions(ballista_scalar_functions())
        .with_aggregate_functions(ballista_aggregate_functions())
        .with_window_functions(ballista_window_functions())
        .with_query_planner(Arc::new(SegflowQueryPlanner))
        .with_physical_optimizer_rules(crate::broadcast::physical_optimizer_rules())
        .build())
}

/// `segflow scheduler`'s settings.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Where to listen; port 0 takes a free port (printed at start).
    pub bind: SocketAddr,
    /// The host name executors and clients reach this scheduler by; default: the bind host.
    pub external_host: Option<String>,
    /// An executor silent this long is taken for lost: its tasks and shuffle output are
    /// rerun elsewhere.
    pub executor_timeout: Duration,
    /// Times one task may fail before its job fails.
    pub task_max_failures: usize,
}

/// Runs a scheduler until the process is stopped. `ready` gets the address it listens on.
pub async fn run_scheduler(
    options: SchedulerOptions,
    ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(options.bind)
        .await
        .map_err(|e| Error::Bind {
            address: options.bind.to_string(),
            source: e,
        })?;
    let address = listener.local_addr().map_err(|e| Error::Bind {
        address: options.bind.to_string(),
        source: e,
    })?;
    let mut config = SchedulerConfig::default()
        .with_hostname(
            options
                .external_host
                .clone()
                .unwrap_or_else(|| address.ip().to_string()),
        )
        .with_port(address.port())
        .with_scheduler_policy(TaskSchedulingPolicy::PushStaged)
        .with_override_config_producer(Arc::new(base_config))
        .with_override_session_builder(Arc::new(scheduler_session))
        .with_grpc_server_max_decoding_message_size(MAX_MESSAGE_BYTES as u32)
        .with_grpc_server_max_encoding_message_size(MAX_MESSAGE_BYTES as u32)
        .with_grpc_client_max_message_size(MAX_MESSAGE_BYTES as u32);
    config.bind_host = address.ip().to_string();
    config.override_logical_codec = Some(Arc::new(LogicalCodec::default()));
    config.override_physical_codec = Some(Arc::new(PhysicalCodec::default()));
    let timeout = options.executor_timeout.as_secs().max(1);
    config.executor_timeout_seconds = timeout;
    config.expire_dead_executor_interval_seconds = timeout.clamp(1, 15);
    config.no_executors_grace_period_seconds = timeout;
    config.task_max_failures = options.task_max_failures.max(1);
    let cluster = BallistaCluster::new_from_config(&config).await?;
    let scheduler =
        create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config)).await?;
    ready(address);
    start_grpc_service_with_listener(listener, scheduler).await?;
    Ok(())
}

/// `segflow executor`'s settings.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler to register with: its host and port.
    pub scheduler_host: String,
    pub scheduler_port: u16,
    /// Where this executor serves its results and shuffle output (Arrow Flight); the port
    /// after it takes the scheduler's task calls.
    pub bind: SocketAddr,
    /// The host name others reach this executor by; default: the bind host.
    pub external_host: Option<String>,
    /// Shuffle files and spills; default: a temporary directory.
    pub work_dir: Option<PathBuf>,
    /// Tasks run at once; default: the number of cores.
    pub concurrent_tasks: Option<usize>,
    /// Memory for query execution, shared by the running tasks; operators spill past it.
    pub memory_limit_bytes: Option<u64>,
    /// How often the executor reports to the scheduler.
    pub heartbeat: Duration,
    /// The id this executor registers under, and writes its files under.
    pub id: Option<String>,
}

/// Runs an executor until the process is stopped (SIGTERM or Ctrl-C drain its tasks first).
pub async fn run_executor(options: ExecutorOptions) -> Result<()> {
    let host = options
        .external_host
        .clone()
        .unwrap_or_else(|| options.bind.ip().to_string());
    let id = options
        .id
        .clone()
        .unwrap_or_else(|| format!("executor-{host}-{}", options.bind.port()));
    // The files this process writes name it, so a run can say which executors did the work.
    segflow_core::write::set_worker(id.clone());
    let work_dir = options.work_dir.clone();
    if let Some(dir) = &work_dir {
        std::fs::create_dir_all(dir).map_err(|e| Error::Bind {
            address: dir.display().to_string(),
            source: e,
        })?;
    }
    let temp = work_dir.clone();
    let config = ExecutorProcessConfig {
        executor_id: id,
        bind_host: options.bind.ip().to_string(),
        external_host: Some(host),
        port: options.bind.port(),
        grpc_port: options
            .bind
            .port()
            .checked_add(1)
            .ok_or_else(|| Error::Bind {
                address: options.bind.to_string(),
                source: std::io::Error::other("the port after --bind must be free for task calls"),
            })?,
        scheduler_host: options.scheduler_host.clone(),
        scheduler_port: options.scheduler_port,
        scheduler_connect_timeout_seconds: 30,
        vcores: options.concurrent_tasks.unwrap_or(0),
        task_scheduling_policy: TaskSchedulingPolicy::PushStaged,
        work_dir: work_dir.map(|d| d.display().to_string()),
        print_thread_info: false,
        executor_heartbeat_interval_seconds: options.heartbeat.as_secs().max(1),
        memory_pool_size: options.memory_limit_bytes,
        grpc_max_decoding_message_size: MAX_MESSAGE_BYTES as u32,
        grpc_max_encoding_message_size: MAX_MESSAGE_BYTES as u32,
        override_logical_codec: Some(Arc::new(LogicalCodec::default())),
        override_physical_codec: Some(Arc::new(PhysicalCodec::default())),
        // Every function DataFusion has, as the scheduler and the client know them:
        // Ballista's default registry lacks the nested ones (`array_element`), which
        // segflow's SQL uses.
        override_function_registry: Some(Arc::new(BallistaFunctionRegistry::from(
            &SessionStateBuilder::new().with_default_features().build(),
        ))),
        override_config_producer: Some(Arc::new(base_config)),
        override_runtime_producer: Some(Arc::new(move |config: &SessionConfig| {
            job_runtime(config, temp.as_ref())
        })),
        ..Default::default()
    };
    start_executor_process(Arc::new(config)).await?;
    Ok(())
}

/// A scheduler and an executor inside this process (running `tasks` tasks at once), and a
/// session on them: the whole path a cluster takes (plans encoded, decoded, cut into stages,
/// shuffled over Flight on loopback), without processes to start. For tests. They run until
/// the tokio runtime that called this stops.
pub async fn standalone(options: &SessionOptions, tasks: usize) -> Result<SessionContext> {
    let (ready, listening) = tokio::sync::oneshot::channel();
    let scheduler = SchedulerOptions {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        external_host: None,
        executor_timeout: Duration::from_secs(60),
        task_max_failures: 4,
    };
    tokio::spawn(async move {
        if let Err(e) = run_scheduler(scheduler, move |a| {
            let _ = ready.send(a);
        })
        .await
        {
            tracing::error!("the standalone scheduler stopped: {e}");
        }
    });
    let address = listening.await.map_err(|_| Error::Connect {
        cluster: "the standalone scheduler".into(),
        message: "it did not start".into(),
    })?;
    let port = free_port_pair()?;
    let executor = ExecutorOptions {
        scheduler_host: address.ip().to_string(),
        scheduler_port: address.port(),
        bind: SocketAddr::from(([127, 0, 0, 1], port)),
        external_host: None,
        work_dir: None,
        concurrent_tasks: Some(tasks.max(1)),
        memory_limit_bytes: None,
        heartbeat: Duration::from_secs(1),
        id: Some("executor-standalone".into()),
    };
    tokio::spawn(async move {
        if let Err(e) = run_executor(executor).await {
            tracing::error!("the standalone executor stopped: {e}");
        }
    });
    // The executor serves Flight once the scheduler has taken its registration.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if std::time::Instant::now() > deadline {
            return Err(Error::Connect {
                cluster: "the standalone executor".into(),
                message: format!("nothing listens on 127.0.0.1:{port} after 30 s"),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cluster = crate::ClusterUrl {
        host: address.ip().to_string(),
        port: address.port(),
    };
    crate::connect(&cluster, options, Duration::from_secs(10)).await
}

/// A free loopback port whose next port is free too: an executor takes both.
fn free_port_pair() -> Result<u16> {
    let bind = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port));
    for _ in 0..100 {
        let first = bind(0).map_err(|e| Error::Bind {
            address: "127.0.0.1:0".into(),
            source: e,
        })?;
        let port = first.local_addr().map(|a| a.port()).unwrap_or(0);
        if port != 0 && port < u16::MAX && bind(port + 1).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::Bind {
        address: "127.0.0.1".into(),
        source: std::io::Error::other("no two free neighbouring ports"),
    })
}
