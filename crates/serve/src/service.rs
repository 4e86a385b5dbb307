//! The Flight SQL service: statements, prepared statements with `$n` parameters, and the
//! metadata calls BI tools make (catalogs, schemas, tables with their columns, SqlInfo).
//!
//! A statement's ticket carries its SQL and the snapshot it was planned on, so the `DoGet`
//! that runs it reads the same run's tables as the `GetFlightInfo` that described it, even if
//! a new run published in between.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginTransactionRequest, ActionBeginTransactionResult,
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo,
    CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use futures::{Stream, TryStreamExt as _};
use prost::Message as _;
use segflow_core::datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use segflow_core::datafusion::arrow::error::ArrowError;
use segflow_core::datafusion::arrow::ipc::writer::IpcWriteOptions;
use segflow_core::datafusion::arrow::record_batch::RecordBatch;
use segflow_core::datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Auth, User};
use crate::metadata;
use crate::query::{Engine, QueryLog, QueryRecord, parameters};
use crate::snapshot::{CATALOG, Published, SCHEMA, Snapshot};

/// Prepared statements kept at once; the oldest goes when a new one would pass it (clients
/// that never close theirs cannot grow the server without bound).
const MAX_PREPARED: usize = 10_000;

type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// What a statement ticket carries.
#[derive(Serialize, Deserialize)]
struct StatementTicket {
    sql: String,
    /// The snapshot it was planned on.
    snapshot: String,
    /// The prepared statement whose bound values it runs with.
    prepared: Option<String>,
}

/// What a prepared statement's handle carries.
#[derive(Serialize, Deserialize)]
struct PreparedHandle {
    id: String,
    sql: String,
}

/// A prepared statement's server-side state: its bound values (its SQL is in its handle).
struct Prepared {
    values: Vec<ScalarValue>,
    created: Instant,
}

pub struct Service {
    published: Arc<Published>,
    engine: Arc<Engine>,
    auth: Auth,
    log: Arc<dyn QueryLog>,
    prepared: Mutex<HashMap<String, Prepared>>,
    sql_info: SqlInfoData,
    xdbc_types: XdbcTypeInfoData,
}

impl Service {
    pub fn new(
        published: Arc<Published>,
        engine: Arc<Engine>,
        auth: Auth,
        log: Arc<dyn QueryLog>,
    ) -> Service {
        let sql_info = metadata::sql_info(engine.limits.query_timeout);
        Service {
            published,
            engine,
            auth,
            log,
            prepared: Mutex::new(HashMap::new()),
            sql_info,
            xdbc_types: metadata::xdbc_types(),
        }
    }

    async fn snapshot(&self) -> Result<Arc<Snapshot>, Status> {
        self.published
            .current()
            .await
            .map_err(|e| Status::unavailable(format!("cannot read the published tables: {e}")))
    }

    /// Plans a statement, logging a failure as the query's line.
    async fn plan_logged(
        &self,
        user: &User,
        snapshot: &Snapshot,
        sql: &str,
        values: Option<&[ScalarValue]>,
    ) -> Result<
        (
            segflow_core::datafusion::execution::SessionState,
            segflow_core::datafusion::logical_expr::LogicalPlan,
        ),
        Status,
    > {
        let started = Instant::now();
        self.engine
            .plan(snapshot, sql, values)
            .await
            .inspect_err(|status| {
                self.log.query(&QueryRecord {
                    user: user.0.clone(),
                    sql: sql.to_string(),
                    run_id: snapshot.run_id.clone(),
                    duration: started.elapsed(),
                    rows: 0,
                    error: Some(status.message().to_string()),
                })
            })
    }

    /// The FlightInfo of a statement: its result schema and the ticket that runs it.
    async fn statement_info(
        &self,
        user: &User,
        sql: String,
        prepared: Option<String>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let snapshot = self.snapshot().await?;
        let values = match &prepared {
            Some(id) => Some(self.bound(id)?),
            None => None,
        };
        let (_, plan) = self
            .plan_logged(user, &snapshot, &sql, values.as_deref())
            .await?;
        let schema = plan.schema().as_arrow().clone();
        let ticket = StatementTicket {
            sql,
            snapshot: snapshot.key.clone(),
            prepared,
        };
        let ticket = TicketStatementQuery {
            statement_handle: serde_json::to_vec(&ticket)
                .expect("a ticket serializes")
                .into(),
        };
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("cannot encode the result schema: {e}")))?
            .with_endpoint(
                FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec())),
            )
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// The values bound to prepared statement `id` (none yet: empty).
    fn bound(&self, id: &str) -> Result<Vec<ScalarValue>, Status> {
        let prepared = self.prepared.lock().expect("prepared statements");
        prepared.get(id).map(|p| p.values.clone()).ok_or_else(|| {
            Status::not_found("the prepared statement is closed or unknown to this server")
        })
    }

    fn prepared_handle(handle: &[u8]) -> Result<PreparedHandle, Status> {
        serde_json::from_slice(handle)
            .map_err(|_| Status::invalid_argument("not a prepared statement handle of this server"))
    }
}

fn user<T>(request: &Request<T>) -> User {
    request
        .extensions()
        .get::<User>()
        .cloned()
        .unwrap_or_else(|| User("anonymous".into()))
}

fn read_only_refusal(what: &str) -> Status {
    Status::permission_denied(format!(
        "segflow serve is read-only: {what} is not supported; the published tables change only \
         when the pipeline runs"
    ))
}

/// The FlightInfo of a metadata command: the command itself is the ticket.
fn metadata_info(
    command: impl ProstMessageExt,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let ticket = Ticket::new(command.as_any().encode_to_vec());
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

fn one_batch<E: std::fmt::Display>(
    batch: Result<RecordBatch, E>,
) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(batch.schema())
        .build(futures::stream::once(async { Ok(batch) }))
        .map_err(Status::from);
    Ok(Response::new(Box::pin(stream)))
}

/// A result of `schema` and no rows.
fn no_rows(schema: SchemaRef) -> Result<Response<DoGetStream>, Status> {
    one_batch(Ok::<_, ArrowError>(RecordBatch::new_empty(schema)))
}

fn ipc_schema(schema: &Schema) -> Result<prost::bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: ArrowError| Status::internal(format!("cannot encode a schema: {e}")))?;
    Ok(bytes)
}

#[tonic::async_trait]
impl FlightSqlService for Service {
    type FlightService = Service;

    /// Authentication happened in the interceptor; the answer carries the bearer header, so
    /// that a client that logged in with Basic credentials (a JDBC user and password) sends
    /// the token from then on.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let bearer = self.auth.bearer_for(request.metadata());
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(answer)])));
        if let Some(b) = bearer {
            let value = MetadataValue::try_from(b.as_str())
                .map_err(|_| Status::invalid_argument("the token is not a valid header value"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let user = user(&request);
        self.statement_info(&user, query.query, None, request.into_inner())
            .await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let user = user(&request);
        let handle = Self::prepared_handle(&cmd.prepared_statement_handle)?;
        self.statement_info(&user, handle.sql, Some(handle.id), request.into_inner())
            .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let user = user(&request);
        let ticket: StatementTicket = serde_json::from_slice(&ticket.statement_handle)
            .map_err(|_| Status::invalid_argument("not a statement ticket of this server"))?;
        let snapshot = self.published.by_key(&ticket.snapshot).ok_or_else(|| {
            Status::failed_precondition(
                "the run this query was planned on is no longer served (newer runs have \
                 published since); run the query again",
            )
        })?;
        let values = match &ticket.prepared {
            Some(id) => Some(self.bound(id)?).filter(|v| !v.is_empty()),
            None => None,
        };
        let (state, plan) = self
            .plan_logged(&user, &snapshot, &ticket.sql, values.as_deref())
            .await?;
        let record = QueryRecord {
            user: user.0,
            sql: ticket.sql,
            run_id: snapshot.run_id.clone(),
            duration: Default::default(),
            rows: 0,
            error: None,
        };
        let stream = self
            .engine
            .run(state, plan, record, self.log.clone())
            .await?;
        let schema = stream.schema();
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(stream)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(flight)))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        one_batch(builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(CATALOG, SCHEMA);
        one_batch(builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        metadata_info(query, &schema, request.into_inner())
    }

    /// Every served table (whatever catalog the client asks for, `None` included: the builder
    /// applies the client's filters), each with its columns and their contract comments.
    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let snapshot = self.snapshot().await?;
        let mut builder = query.into_builder();
        for t in &snapshot.tables {
            builder
                .append(CATALOG, SCHEMA, &t.name, "TABLE", &t.schema)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        one_batch(builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append("TABLE");
        one_batch(builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        one_batch(query.into_builder(&self.sql_info).build())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(&self.xdbc_types).schema();
        metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        one_batch(query.into_builder(&self.xdbc_types).build())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(
            query,
            &metadata::primary_keys_schema(),
            request.into_inner(),
        )
    }

    /// Published tables declare no keys: the spec's schema, no rows (likewise below).
    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        no_rows(metadata::primary_keys_schema())
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(
            query,
            &metadata::foreign_keys_schema(),
            request.into_inner(),
        )
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        no_rows(metadata::foreign_keys_schema())
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(
            query,
            &metadata::foreign_keys_schema(),
            request.into_inner(),
        )
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        no_rows(metadata::foreign_keys_schema())
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let user = user(&request);
        let snapshot = self.snapshot().await?;
        let (_, plan) = self
            .plan_logged(&user, &snapshot, &query.query, Some(&[]))
            .await?;
        let dataset = plan.schema().as_arrow().clone();
        let params: Vec<Field> = parameters(&plan)?
            .into_iter()
            .map(|(name, ty)| Field::new(name, ty.unwrap_or(DataType::Null), true))
            .collect();
        let id = format!("{:032x}", rand::random::<u128>());
        {
            let mut prepared = self.prepared.lock().expect("prepared statements");
            if prepared.len() >= MAX_PREPARED
                && let Some(oldest) = prepared
                    .iter()
                    .min_by_key(|(_, p)| p.created)
                    .map(|(k, _)| k.clone())
            {
                prepared.remove(&oldest);
            }
            prepared.insert(
                id.clone(),
                Prepared {
                    values: Vec::new(),
                    created: Instant::now(),
                },
            );
        }
        let handle = PreparedHandle {
            id,
            sql: query.query,
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: serde_json::to_vec(&handle)
                .expect("a handle serializes")
                .into(),
            dataset_schema: ipc_schema(&dataset)?,
            parameter_schema: ipc_schema(&Schema::new(params))?,
        })
    }

    /// Binds one row of values to the statement's `$1`, `$2`, ... (kept on the server; the
    /// handle stays the same).
    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let handle = Self::prepared_handle(&query.prepared_statement_handle)?;
        let stream = request.into_inner().map_err(FlightError::from);
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(stream)
                .try_collect()
                .await
                .map_err(|e| Status::invalid_argument(format!("cannot read the values: {e}")))?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows > 1 {
            return Err(Status::invalid_argument(format!(
                "bind one row of parameter values to a query; {rows} rows were sent"
            )));
        }
        let values = match batches.iter().find(|b| b.num_rows() == 1) {
            Some(b) => b
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, 0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Status::invalid_argument(format!("cannot read a value: {e}")))?,
            None => Vec::new(),
        };
        let mut prepared = self.prepared.lock().expect("prepared statements");
        let entry = prepared.get_mut(&handle.id).ok_or_else(|| {
            Status::not_found("the prepared statement is closed or unknown to this server")
        })?;
        entry.values = values;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: None,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        let handle = Self::prepared_handle(&query.prepared_statement_handle)?;
        self.prepared
            .lock()
            .expect("prepared statements")
            .remove(&handle.id);
        Ok(())
    }

    async fn do_put_statement_update(
        &self,
        _query: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only_refusal("an update statement"))
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only_refusal("an update statement"))
    }

    async fn do_put_statement_ingest(
        &self,
        _query: CommandStatementIngest,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only_refusal("bulk ingestion"))
    }

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        Err(read_only_refusal("a transaction"))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
