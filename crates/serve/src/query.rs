//! Planning and running one query: read-only, on one snapshot, within its memory and time.

use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow_flight::error::FlightError;
use futures::{Stream, StreamExt as _};
use segflow_core::datafusion::arrow::record_batch::RecordBatch;
use segflow_core::datafusion::common::ScalarValue;
use segflow_core::datafusion::error::DataFusionError;
use segflow_core::datafusion::execution::SessionStateBuilder;
use segflow_core::datafusion::execution::context::SQLOptions;
use segflow_core::datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use segflow_core::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use segflow_core::datafusion::execution::{SendableRecordBatchStream, SessionState};
use segflow_core::datafusion::logical_expr::LogicalPlan;
use segflow_core::datafusion::prelude::{DataFrame, SessionContext};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::snapshot::{CATALOG, SCHEMA, Snapshot};

/// What one query may use.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Memory for one query's operators; past it the query fails (`RESOURCE_EXHAUSTED`) or
    /// spills where its operators can, instead of taking the server's memory.
    pub query_memory: usize,
    /// Wall time of one query, from the call that runs it to its last batch.
    pub query_timeout: Duration,
    /// Queries running at once; more wait (within their timeout) for one to finish.
    pub concurrent_queries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            query_memory: 2 << 30,
            query_timeout: Duration::from_secs(300),
            concurrent_queries: 8,
        }
    }
}

/// One SQL query, as the query log tells it. Never holds a token.
#[derive(Debug, Clone)]
pub struct QueryRecord {
    /// The token's name (`anonymous` under `--no-auth`).
    pub user: String,
    pub sql: String,
    /// The run whose tables it read.
    pub run_id: Option<String>,
    pub duration: Duration,
    pub rows: u64,
    /// Why it failed, or `None`.
    pub error: Option<String>,
}

/// Where the server reports: one call per query, per refused call, and per run it starts
/// serving.
pub trait QueryLog: Send + Sync {
    fn query(&self, record: &QueryRecord);
    /// A call refused before it reached a query (no token, a wrong token).
    fn refused(&self, peer: Option<std::net::SocketAddr>, reason: &str);
    /// Queries read run `run_id`'s `tables` tables from now on (a new publish was seen).
    fn serving(&self, run_id: &str, tables: usize);
}

/// Plans and runs queries against snapshots.
pub struct Engine {
    /// The session every query's session starts from: segflow's configuration and object
    /// stores, with `segflow.public` as the default schema.
    base: SessionState,
    pub limits: Limits,
    permits: Arc<Semaphore>,
}

impl Engine {
    pub fn new(ctx: &SessionContext, limits: Limits) -> Engine {
        let mut config = ctx
            .copied_config()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(false);
        // Filters decode their own columns first and the others only for matching rows: a
        // point lookup by customer_id reads one column of the table, not all of them.
        let parquet = &mut config.options_mut().execution.parquet;
        parquet.pushdown_filters = true;
        parquet.reorder_filters = true;
        let base = SessionStateBuilder::new_from_existing(ctx.state())
            .with_config(config)
            .build();
        let permits = Arc::new(Semaphore::new(limits.concurrent_queries.max(1)));
        Engine {
            base,
            limits,
            permits,
        }
    }

    /// A session for one query on `snapshot`: the snapshot's tables, and a memory pool of the
    /// query's own (the object stores and the Parquet metadata cache are shared).
    fn state(&self, snapshot: &Snapshot) -> Result<SessionState, Status> {
        let pool = TrackConsumersPool::new(
            GreedyMemoryPool::new(self.limits.query_memory),
            NonZeroUsize::new(3).expect("3 > 0"),
        );
        let runtime = RuntimeEnvBuilder::from_runtime_env(self.base.runtime_env())
            .with_memory_pool(Arc::new(pool))
            .build_arc()
            .map_err(|e| Status::internal(format!("cannot set up the query: {e}")))?;
        Ok(SessionStateBuilder::new_from_existing(self.base.clone())
            .with_runtime_env(runtime)
            .with_catalog_list(snapshot.catalogs.clone())
            .build())
    }

    /// Plans `sql` on `snapshot`, refusing anything but a query, with `params` bound to its
    /// `$1`, `$2`, ... (`None`: the statement must have none; `Some`: it is a prepared
    /// statement, whose parameters may still be unbound when it is only being described).
    pub async fn plan(
        &self,
        snapshot: &Snapshot,
        sql: &str,
        params: Option<&[ScalarValue]>,
    ) -> Result<(SessionState, LogicalPlan), Status> {
        let state = self.state(snapshot)?;
        let plan = state
            .create_logical_plan(sql)
            .await
            .map_err(|e| self.status(e))?;
        read_only(&plan)?;
        let plan = match params {
            Some(values) if !values.is_empty() => bind(plan, values)?,
            Some(_) => plan,
            None => {
                let n = parameters(&plan)?.len();
                if n > 0 {
                    return Err(Status::invalid_argument(format!(
                        "the query has {n} parameter(s) ($1...): run it as a prepared \
                         statement and bind their values"
                    )));
                }
                plan
            }
        };
        Ok((state, plan))
    }

    /// Runs a planned query; the stream ends with an error past the timeout, and reports the
    /// query to `log` when it ends, fails or is dropped by the client.
    pub async fn run(
        &self,
        state: SessionState,
        plan: LogicalPlan,
        mut record: QueryRecord,
        log: Arc<dyn QueryLog>,
    ) -> Result<QueryStream, Status> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.limits.query_timeout;
        let fail = |record: &mut QueryRecord, status: Status| {
            record.duration = started.elapsed();
            record.error = Some(status.message().to_string());
            log.query(record);
            status
        };
        let permit =
            match tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => return Err(fail(&mut record, Status::unavailable("shutting down"))),
                Err(_) => {
                    let s = Status::resource_exhausted(format!(
                        "{} queries were running for the whole --query-timeout ({}s); try again",
                        self.limits.concurrent_queries,
                        self.limits.query_timeout.as_secs()
                    ));
                    return Err(fail(&mut record, s));
                }
            };
        let stream =
            tokio::time::timeout_at(deadline, DataFrame::new(state, plan).execute_stream())
                .await
                .map_err(|_| self.timed_out())
                .and_then(|r| r.map_err(|e| self.status(e)));
        let inner = match stream {
            Ok(s) => s,
            Err(status) => return Err(fail(&mut record, status)),
        };
        Ok(QueryStream {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            timed_out: self.timed_out(),
            started,
            record,
            log,
            finished: false,
            memory_limit: self.limits.query_memory,
            _permit: permit,
        })
    }

    fn timed_out(&self) -> Status {
        Status::deadline_exceeded(format!(
            "the query ran past the server's limit of {}s (--query-timeout) and was stopped",
            self.limits.query_timeout.as_secs()
        ))
    }

    pub fn status(&self, e: DataFusionError) -> Status {
        status(e, self.limits.query_memory)
    }
}

/// A DataFusion error as the client sees it: what was wrong with the query, or that it
/// needed more memory than one query gets.
fn status(e: DataFusionError, memory_limit: usize) -> Status {
    let message = e.to_string();
    match e.find_root() {
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(format!(
            "the query needs more than the {} MiB one query may use (--query-memory-limit): \
             {message}; filter earlier, select fewer columns, or ask for a higher limit",
            memory_limit >> 20
        )),
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_) => Status::invalid_argument(message),
        _ => Status::internal(message),
    }
}

/// Refuses DDL, DML (`INSERT`, `COPY`), and statements (`SET`, transactions): the server only
/// reads what runs published.
fn read_only(plan: &LogicalPlan) -> Result<(), Status> {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(plan)
        .map_err(|e| {
            let what = e.strip_backtrace();
            let what = what.trim_start_matches("Error during planning: ");
            Status::permission_denied(format!(
                "segflow serve is read-only: {what}; the published tables change only when \
                 the pipeline runs"
            ))
        })
}

/// The `$n` parameters of a plan, `$1` first, with their types where the plan implies them.
pub fn parameters(
    plan: &LogicalPlan,
) -> Result<
    Vec<(
        String,
        Option<segflow_core::datafusion::arrow::datatypes::DataType>,
    )>,
    Status,
> {
    let types = plan
        .get_parameter_types()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let mut params: Vec<_> = types.into_iter().collect();
    params.sort_by_key(|(name, _)| {
        name.trim_start_matches('$')
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    Ok(params)
}

/// Binds `values` to `$1..$n`, each cast to the type the plan gives its parameter.
fn bind(plan: LogicalPlan, values: &[ScalarValue]) -> Result<LogicalPlan, Status> {
    let params = parameters(&plan)?;
    if params.len() != values.len() {
        return Err(Status::invalid_argument(format!(
            "the statement has {} parameter(s) and {} value(s) were bound",
            params.len(),
            values.len()
        )));
    }
    let values = params
        .iter()
        .zip(values)
        .map(|((name, ty), v)| match ty {
            Some(t) if *t != v.data_type() && !v.is_null() => v.cast_to(t).map_err(|e| {
                Status::invalid_argument(format!(
                    "parameter {name}: cannot use a {} value as {t}: {e}",
                    v.data_type()
                ))
            }),
            _ => Ok(v.clone()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    plan.with_param_values(values)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A query's batches, stopped at its deadline, reported to the query log once.
pub struct QueryStream {
    inner: SendableRecordBatchStream,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timed_out: Status,
    started: Instant,
    record: QueryRecord,
    log: Arc<dyn QueryLog>,
    finished: bool,
    memory_limit: usize,
    _permit: OwnedSemaphorePermit,
}

impl QueryStream {
    /// The schema of the batches.
    pub fn schema(&self) -> segflow_core::datafusion::arrow::datatypes::SchemaRef {
        self.inner.schema()
    }

    fn end(&mut self, error: Option<String>) {
        self.finished = true;
        self.record.error = error;
    }
}

impl Stream for QueryStream {
    type Item = Result<RecordBatch, FlightError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            let status = this.timed_out.clone();
            this.end(Some(status.message().to_string()));
            return Poll::Ready(Some(Err(FlightError::Tonic(Box::new(status)))));
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(batch))) => {
                this.record.rows += batch.num_rows() as u64;
                Poll::Ready(Some(Ok(batch)))
            }
            Poll::Ready(Some(Err(e))) => {
                let status = status(e, this.memory_limit);
                this.end(Some(status.message().to_string()));
                Poll::Ready(Some(Err(FlightError::Tonic(Box::new(status)))))
            }
            Poll::Ready(None) => {
                this.end(None);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for QueryStream {
    fn drop(&mut self) {
        if !self.finished {
            self.record.error = Some("cancelled: the client stopped reading".into());
        }
        self.record.duration = self.started.elapsed();
        self.log.query(&self.record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt as _;
    use segflow_core::datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use segflow_core::datafusion::catalog::{MemTable, MemorySchemaProvider, SchemaProvider};

    fn snapshot() -> Snapshot {
        let batch = RecordBatch::try_from_iter([
            (
                "customer_id",
                Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
            ),
            (
                "frequency",
                Arc::new(Int64Array::from(vec![1, 3, 5])) as ArrayRef,
            ),
        ])
        .unwrap();
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        let schema = MemorySchemaProvider::new();
        schema
            .register_table("customer_segments".into(), Arc::new(table))
            .unwrap();
        Snapshot {
            key: "k".into(),
            run_id: Some("r1".into()),
            tables: Vec::new(),
            catalogs: crate::snapshot::catalog_list(schema),
        }
    }

    #[derive(Default)]
    struct Recorded(std::sync::Mutex<Vec<QueryRecord>>);

    impl QueryLog for Recorded {
        fn query(&self, record: &QueryRecord) {
            self.0.lock().unwrap().push(record.clone());
        }
        fn refused(&self, _peer: Option<std::net::SocketAddr>, _reason: &str) {}
        fn serving(&self, _run_id: &str, _tables: usize) {}
    }

    fn record(sql: &str) -> QueryRecord {
        QueryRecord {
            user: "bi".into(),
            sql: sql.into(),
            run_id: Some("r1".into()),
            duration: Duration::ZERO,
            rows: 0,
            error: None,
        }
    }

    #[tokio::test]
    async fn only_queries_plan() {
        let engine = Engine::new(&SessionContext::new(), Limits::default());
        let snapshot = snapshot();
        for sql in [
            "DROP TABLE customer_segments",
            "INSERT INTO customer_segments VALUES ('d', 1)",
            "DELETE FROM customer_segments",
            "COPY customer_segments TO '/tmp/segflow-serve-copy.csv'",
            "CREATE TABLE t AS SELECT 1",
            "CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '/etc/'",
            "CREATE VIEW v AS SELECT 1",
            "SET datafusion.execution.batch_size = 1",
        ] {
            let err = engine.plan(&snapshot, sql, None).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::PermissionDenied, "{sql}: {err}");
            assert!(err.message().contains("read-only"), "{sql}: {err}");
        }
        assert!(!std::path::Path::new("/tmp/segflow-serve-copy.csv").exists());
        let (_, plan) = engine
            .plan(
                &snapshot,
                "select count(*) from segflow.public.customer_segments",
                None,
            )
            .await
            .unwrap();
        assert_eq!(plan.schema().fields().len(), 1);
    }

    #[tokio::test]
    async fn parameters_bind_in_their_columns_types() {
        let engine = Engine::new(&SessionContext::new(), Limits::default());
        let snapshot = snapshot();
        let sql = "select count(*) as n from customer_segments where frequency >= $1";
        // An Int32 value for an Int64 column is cast, as a client's integer may arrive.
        let (state, plan) = engine
            .plan(&snapshot, sql, Some(&[ScalarValue::Int32(Some(3))]))
            .await
            .unwrap();
        let batches = DataFrame::new(state, plan).collect().await.unwrap();
        let n = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0);
        assert_eq!(n, 2);
        let unbound = engine.plan(&snapshot, sql, None).await.unwrap_err();
        assert_eq!(unbound.code(), tonic::Code::InvalidArgument);
        assert!(unbound.message().contains("parameter"), "{unbound}");
        let two = [ScalarValue::Int64(Some(1)), ScalarValue::Int64(Some(2))];
        let wrong = engine.plan(&snapshot, sql, Some(&two)).await.unwrap_err();
        assert!(wrong.message().contains("2 value(s)"), "{wrong}");
        // Described before values are bound (a prepared statement's CreatePreparedStatement).
        let (_, described) = engine.plan(&snapshot, sql, Some(&[])).await.unwrap();
        assert_eq!(parameters(&described).unwrap()[0].0, "$1");
    }

    #[tokio::test]
    async fn a_query_past_its_timeout_stops_and_every_query_is_logged_once() {
        let limits = Limits {
            query_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let engine = Engine::new(&SessionContext::new(), limits);
        let snapshot = snapshot();
        let log = Arc::new(Recorded::default());
        let sql = "select count(*) from generate_series(1, 100000000000)";
        let (state, plan) = engine.plan(&snapshot, sql, None).await.unwrap();
        let stream = engine
            .run(state, plan, record(sql), log.clone())
            .await
            .unwrap();
        let started = Instant::now();
        let err = stream.try_collect::<Vec<_>>().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        let FlightError::Tonic(status) = err else {
            panic!("{err}")
        };
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        let ok = "select customer_id from customer_segments";
        let (state, plan) = engine.plan(&snapshot, ok, None).await.unwrap();
        let rows: Vec<RecordBatch> = engine
            .run(state, plan, record(ok), log.clone())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
        let records = log.0.lock().unwrap();
        assert_eq!(records.len(), 2);
        assert!(
            records[0]
                .error
                .as_deref()
                .unwrap()
                .contains("--query-timeout")
        );
        assert_eq!((records[1].rows, records[1].error.as_deref()), (3, None));
        assert_eq!(records[1].user, "bi");
    }

    #[test]
    fn errors_map_to_the_codes_clients_act_on() {
        let mem = status(
            DataFusionError::ResourcesExhausted("Failed to allocate".into()),
            64 << 20,
        );
        assert_eq!(mem.code(), tonic::Code::ResourceExhausted);
        assert!(mem.message().contains("64 MiB"), "{}", mem.message());
        let plan = status(
            DataFusionError::Context(
                "ctx".into(),
                Box::new(DataFusionError::Plan("no such table".into())),
            ),
            1,
        );
        assert_eq!(plan.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status(DataFusionError::Internal("x".into()), 1).code(),
            tonic::Code::Internal
        );
    }
}
