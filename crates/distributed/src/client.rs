//! The client side: a `SessionContext` whose plans run on a Ballista cluster.
//!
//! It is the embedded engine's session ([`segflow_core::session::config`]) with Ballista's
//! query planner, segflow's codecs, and [`EngineInfo`] saying where plans run. Stages get it
//! as a plain `SessionContext`. Every job's id is noted in the [`EngineInfo`] when the job
//! ends, for the run manifest.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ballista::prelude::{SessionConfigExt, SessionContextExt};
use ballista_core::execution_plans::DistributedQueryExec;
use ballista_core::planner::BallistaQueryPlanner;
use datafusion_proto::protobuf::LogicalPlanNode;
use futures::StreamExt;
use segflow_core::datafusion::arrow::array::RecordBatch;
use segflow_core::datafusion::catalog::Session;
use segflow_core::datafusion::common::internal_err;
use segflow_core::datafusion::common::tree_node::TreeNodeRecursion;
use segflow_core::datafusion::error::Result as DfResult;
use segflow_core::datafusion::execution::context::QueryPlanner;
use segflow_core::datafusion::execution::{SessionStateBuilder, TaskContext};
use segflow_core::datafusion::logical_expr::LogicalPlan;
use segflow_core::datafusion::physical_expr::PhysicalExpr;
use segflow_core::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use segflow_core::datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};
use segflow_core::datafusion::prelude::SessionContext;
use segflow_core::session::{EngineInfo, SessionOptions};

use crate::codec::{LogicalCodec, PhysicalCodec};
use crate::error::{Error, Result};

/// A cluster to run on, as `--engine` names it: `ballista://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    pub host: String,
    pub port: u16,
}

impl ClusterUrl {
    /// The port Ballista's scheduler listens on unless told otherwise.
    pub const DEFAULT_PORT: u16 = 50050;

    /// Parses `ballista://HOST[:PORT]`.
    pub fn parse(text: &str) -> Result<ClusterUrl> {
        let bad = |why: &str| Error::Engine {
            engine: text.to_string(),
            message: format!(
                "{why}; write `local` or `ballista://HOST:PORT` (the address `segflow scheduler` binds)"
            ),
        };
        let url = url::Url::parse(text).map_err(|_| bad("not a URL"))?;
        if url.scheme() != "ballista" {
            return Err(bad(&format!("unknown engine `{}`", url.scheme())));
        }
        let host = url.host_str().ok_or_else(|| bad("no host"))?.to_string();
        if !url.path().trim_matches('/').is_empty() {
            return Err(bad("an engine URL has no path"));
        }
        Ok(ClusterUrl {
            host,
            port: url.port().unwrap_or(Self::DEFAULT_PORT),
        })
    }

    /// The scheduler's gRPC address.
    pub fn grpc(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// Whether the cluster is on this machine: nothing sent to it leaves the machine.
    pub fn is_loopback(&self) -> bool {
        match self
            .host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
        {
            Ok(ip) => ip.is_loopback(),
            Err(_) => self.host == "localhost",
        }
    }
}

impl std::fmt::Display for ClusterUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ballista://{}:{}", self.host, self.port)
    }
}

/// A session whose plans run on the cluster at `cluster`. Fails, naming the address, when the
/// scheduler does not answer within `timeout`.
pub async fn connect(
    cluster: &ClusterUrl,
    options: &SessionOptions,
    timeout: Duration,
) -> Result<SessionContext> {
    // Fail early, with the address, rather than at the first stage.
    use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
    match tokio::time::timeout(timeout, SchedulerGrpcClient::connect(cluster.grpc())).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(Error::Connect {
                cluster: cluster.to_string(),
                message: e.to_string(),
            });
        }
        Err(_) => {
            return Err(Error::Connect {
                cluster: cluster.to_string(),
                message: format!("no answer in {} s", timeout.as_secs()),
            });
        }
    }
    let engine =
        EngineInfo::new(cluster.to_string(), true).with_private_channel(cluster.is_loopback());
    // What this process writes itself (k-means' fitted rows) is the client's, in manifests.
    segflow_core::write::set_worker("client".into());
    let config = segflow_core::session::config(options)?
        .with_extension(Arc::new(engine))
        .with_ballista_logical_extension_codec(Arc::new(LogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(PhysicalCodec::default()))
        .upgrade_for_ballista()
        .with_ballista_adaptive_query_planner(false)
        .with_ballista_grpc_client_max_message_size(crate::cluster::MAX_MESSAGE_BYTES);
    let planner = BallistaQueryPlanner::<LogicalPlanNode>::with_extension(
        cluster.grpc(),
        config.ballista_config(),
        Arc::new(LogicalCodec::default()),
    );
    let config = config.with_ballista_query_planner(Arc::new(JobPlanner { inner: planner }));
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(segflow_core::session::runtime(options)?)
        .build();
    // Ballista's URL parser takes any scheme with a host and port.
    let url = format!("df://{}:{}", cluster.host, cluster.port);
    Ok(SessionContext::remote_with_state(&url, state).await?)
}

/// Ballista's planner, with each job's id noted when the job ends.
struct JobPlanner {
    inner: BallistaQueryPlanner<LogicalPlanNode>,
}

impl std::fmt::Debug for JobPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobPlanner").finish_non_exhaustive()
    }
}

#[async_trait]
impl QueryPlanner for JobPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let plan = self
            .inner
            .create_physical_plan(logical_plan, session)
            .await?;
        if plan
            .downcast_ref::<DistributedQueryExec<LogicalPlanNode>>()
            .is_some()
        {
            return Ok(Arc::new(JobExec::new(plan)));
        }
        Ok(plan)
    }
}

/// A job on the cluster, whose id is noted in the session's [`EngineInfo`] once its results
/// are read.
#[derive(Debug)]
struct JobExec {
    job: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl JobExec {
    fn new(job: Arc<dyn ExecutionPlan>) -> Self {
        let properties = job.properties().clone();
        JobExec { job, properties }
    }
}

impl DisplayAs for JobExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "JobExec")
    }
}

impl ExecutionPlan for JobExec {
    fn name(&self) -> &str {
        "JobExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.job]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("JobExec wraps one job");
        }
        Ok(Arc::new(JobExec::new(children.remove(0))))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let rows = self.job.execute(partition, context.clone())?;
        let schema = rows.schema();
        let job = self.job.clone();
        let engine = context.session_config().get_extension::<EngineInfo>();
        let note = futures::stream::once(async move {
            let id = job
                .downcast_ref::<DistributedQueryExec<LogicalPlanNode>>()
                .and_then(|j| j.job_id());
            if let (Some(engine), Some(id)) = (engine, id) {
                engine.record_job(id.as_str().to_string());
            }
        })
        .filter_map(|()| async { None::<DfResult<RecordBatch>> });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            rows.chain(note),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_parse_and_say_what_is_wrong() {
        let c = ClusterUrl::parse("ballista://127.0.0.1:50123").unwrap();
        assert_eq!(c.grpc(), "http://127.0.0.1:50123");
        assert!(c.is_loopback());
        let c = ClusterUrl::parse("ballista://scheduler.internal").unwrap();
        assert_eq!(c.port, ClusterUrl::DEFAULT_PORT);
        assert!(!c.is_loopback());
        assert_eq!(c.to_string(), "ballista://scheduler.internal:50050");
        let e = ClusterUrl::parse("spark://x:1").unwrap_err().to_string();
        assert!(e.contains("unknown engine `spark`"), "{e}");
        assert!(e.contains("ballista://HOST:PORT"), "{e}");
        assert!(ClusterUrl::parse("ballista://h:1/x").is_err());
        assert!(ClusterUrl::parse("127.0.0.1:50050").is_err());
    }
}
