//! The server from arrow-rs's own Flight SQL client, in process, over an output with nothing
//! published yet: the protocol calls JDBC tools make that the ADBC test
//! (tests/serve/flight_sql.py) does not reach, the Basic handshake, and refusals.

use std::sync::Arc;

use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandGetPrimaryKeys, CommandGetTables, CommandGetXdbcTypeInfo, SqlInfo, XdbcDataType,
};
use futures::TryStreamExt as _;
use segflow_core::datafusion::arrow::record_batch::RecordBatch;
use segflow_core::datafusion::arrow::util::pretty::pretty_format_batches;
use segflow_core::datafusion::prelude::SessionContext;
use tonic::transport::Channel;

use crate::{Auth, Limits, QueryLog, QueryRecord, ServeOptions, Tokens, serve};

const SECRET: &str = "0123456789abcdef-jdbc";

struct Quiet;

impl QueryLog for Quiet {
    fn query(&self, _record: &QueryRecord) {}
    fn refused(&self, _peer: Option<std::net::SocketAddr>, _reason: &str) {}
    fn serving(&self, _run_id: &str, _tables: usize) {}
}

async fn rows(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Vec<RecordBatch> {
    let ticket = info.endpoint[0].ticket.clone().expect("a ticket");
    client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

fn count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

#[tokio::test]
async fn jdbc_style_calls_answer_and_writes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let runs = url::Url::from_directory_path(dir.path().join("_runs")).unwrap();
    let options = ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        auth: Auth::Tokens(Tokens::from_list(&format!("jdbc:{SECRET}")).unwrap()),
        tls: None,
        limits: Limits::default(),
    };
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        SessionContext::new(),
        runs,
        options,
        Arc::new(Quiet),
        move |l| {
            let _ = addr_tx.send(l.addr);
        },
        async {
            let _ = stop_rx.await;
        },
    ));
    let addr = addr_rx.await.expect("the server listens");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);

    let refused = client.get_catalogs().await.unwrap_err().to_string();
    assert!(refused.contains("bearer token is required"), "{refused}");
    // A JDBC user and password: the handshake answers with the bearer token.
    client.handshake("anyone", SECRET).await.unwrap();
    assert_eq!(client.token().map(String::as_str), Some(SECRET));

    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .unwrap();
    let text = pretty_format_batches(&rows(&mut client, info).await)
        .unwrap()
        .to_string();
    assert!(text.contains("segflow") && text.contains("true"), "{text}");

    let all = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    assert_eq!(count(&rows(&mut client, all).await), 11);
    let varchar = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo {
            data_type: Some(XdbcDataType::XdbcVarchar as i32),
        })
        .await
        .unwrap();
    let text = pretty_format_batches(&rows(&mut client, varchar).await)
        .unwrap()
        .to_string();
    assert!(
        text.contains("VARCHAR") && !text.contains("BIGINT"),
        "{text}"
    );

    let keys = client
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "customer_segments".into(),
        })
        .await
        .unwrap();
    let keys = rows(&mut client, keys).await;
    assert_eq!(count(&keys), 0);

    let catalogs = client.get_catalogs().await.unwrap();
    let text = pretty_format_batches(&rows(&mut client, catalogs).await)
        .unwrap()
        .to_string();
    assert!(text.contains("segflow"), "{text}");
    // Nothing published yet: no tables, and queries that need none still run.
    let tables = client
        .get_tables(CommandGetTables {
            include_schema: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(count(&rows(&mut client, tables).await), 0);
    let one = client
        .execute("select 1 as one".into(), None)
        .await
        .unwrap();
    assert_eq!(count(&rows(&mut client, one).await), 1);

    let update = client
        .execute_update("DROP TABLE customer_segments".into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(update.contains("read-only"), "{update}");
    let ddl = client
        .execute("CREATE TABLE t AS SELECT 1".into(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(ddl.contains("read-only"), "{ddl}");

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
