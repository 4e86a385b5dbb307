//! `segflow serve`: the tables a pipeline publishes, over Arrow Flight SQL, to BI tools (ADBC,
//! the Flight SQL JDBC driver, Power BI), Python notebooks and anything else that speaks it.
//!
//! - **One run at a time.** Each query reads the run that `_runs/_published.json` names, every
//!   table at the Delta version of that run ([`snapshot`]); a run that publishes is seen by the
//!   next query, with no restart.
//! - **Read-only, bounded.** Only queries plan: DDL, DML, `COPY` and statements are refused.
//!   Each query has its own memory pool and a timeout, and a few run at once ([`query`]).
//! - **Authenticated.** Bearer tokens ([`auth`]); `--no-auth` only on a loopback address. TLS
//!   with a certificate and key.
//! - **Described.** GetCatalogs, GetDbSchemas, GetTables (with schemas, whatever catalog the
//!   client names or none), GetTableTypes, GetSqlInfo, GetXdbcTypeInfo and the (empty) key
//!   listings; columns carry their meaning from the output contract ([`contract`]).
//!
//! The service is segflow's own, on arrow-flight's `FlightSqlService`, rather than
//! `datafusion-flight-sql-server`: that crate needs substrait (protoc, a large generated crate
//! in every build), lists no tables when the client names no catalog, and answers no SqlInfo,
//! which the JDBC driver needs to show a table tree; and a per-query snapshot, session and
//! memory pool are most of what a server for segflow's outputs is.

pub mod auth;
#[cfg(test)]
mod client_tests;
pub mod contract;
mod error;
mod metadata;
pub mod query;
mod service;
pub mod snapshot;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use segflow_core::datafusion::prelude::SessionContext;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use url::Url;

pub use auth::{Auth, Tokens, User};
pub use error::{Error, Result};
pub use query::{Limits, QueryLog, QueryRecord};

/// TLS certificate chain and private key, PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub auth: Auth,
    pub tls: Option<TlsFiles>,
    pub limits: Limits,
}

/// What the server knows once it listens, for the caller to announce.
#[derive(Debug, Clone)]
pub struct Listening {
    pub addr: SocketAddr,
    pub tls: bool,
    /// The run whose tables are served now (`None` before the first publish).
    pub run_id: Option<String>,
    pub tables: usize,
}

/// Refuses what would serve the data unprotected or not at all.
fn check_options(options: &ServeOptions) -> Result<()> {
    match &options.auth {
        Auth::Disabled if !options.listen.ip().is_loopback() => Err(Error::Config(format!(
            "--no-auth is allowed only on a loopback address (127.0.0.1 or ::1), and {} is \
             not one: anyone who can reach it could read the data; configure tokens \
             (SEGFLOW_SERVE_TOKENS or --token-file)",
            options.listen
        ))),
        Auth::Tokens(t) if t.is_empty() => Err(Error::Config(
            "no token is configured: set SEGFLOW_SERVE_TOKENS=NAME:SECRET[,...] or pass \
             --token-file FILE, or pass --no-auth to serve without authentication on a \
             loopback address"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// Serves the tables published under `runs` until `shutdown` resolves. `ctx` is a session
/// with the pipeline's object stores; `ready` is called once the server listens.
pub async fn serve(
    ctx: SessionContext,
    runs: Url,
    options: ServeOptions,
    log: Arc<dyn QueryLog>,
    ready: impl FnOnce(&Listening),
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    check_options(&options)?;
    let published = Arc::new(snapshot::Published::new(ctx.clone(), runs, log.clone())?);
    // The tables of the current run are opened before listening, so a pointer naming a table
    // that cannot be read fails the start, not the first query.
    let first = published.current().await?;
    let engine = Arc::new(query::Engine::new(&ctx, options.limits.clone()));
    let service = service::Service::new(published, engine, options.auth.clone(), log.clone());

    let acceptor = match &options.tls {
        Some(tls) => Some(tls::acceptor(&tls.cert, &tls.key)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: options.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: options.listen,
        source,
    })?;
    let auth = options.auth.clone();
    let interceptor =
        move |mut request: tonic::Request<()>| match auth.authenticate(request.metadata()) {
            Ok(user) => {
                request.extensions_mut().insert(user);
                Ok(request)
            }
            Err(status) => {
                log.refused(request.remote_addr(), status.message());
                Err(status)
            }
        };
    ready(&Listening {
        addr,
        tls: options.tls.is_some(),
        run_id: first.run_id.clone(),
        tables: first.tables.len(),
    });
    let routes =
        Server::builder().add_service(FlightServiceServer::with_interceptor(service, interceptor));
    match acceptor {
        Some(acceptor) => {
            routes
                .serve_with_incoming_shutdown(tls::incoming(listener, acceptor), shutdown)
                .await
        }
        None => {
            // Without Nagle's delay a point lookup's answer leaves at once.
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            routes
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    }
    .map_err(Error::Transport)
}
