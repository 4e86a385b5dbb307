//! `segflow serve`: the pipeline's published tables over Flight SQL (crates/serve).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use segflow_core::session::{self, SessionOptions};
use segflow_serve::{
    Auth, Limits, Listening, QueryLog, QueryRecord, ServeOptions, TlsFiles, Tokens,
};
use serde_json::json;

use crate::{log, out};

/// `segflow serve`.
#[derive(clap::Args)]
pub struct Args {
    /// The pipeline whose published tables to serve (its `output`, `runs` and `storage:`).
    pipeline: PathBuf,
    /// Override a pipeline var: --var output=s3://bucket/segments
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = crate::parse_var)]
    vars: Vec<(String, String)>,
    /// Address to listen on; port 0 takes a free port. Printed once listening:
    /// `segflow serve listening on HOST:PORT`.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// A file of bearer tokens, one `NAME:SECRET` per line (`#` comments); added to those in
    /// SEGFLOW_SERVE_TOKENS (comma-separated).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Serve without authentication; refused unless --listen is a loopback address.
    #[arg(long, conflicts_with = "token_file")]
    no_auth: bool,
    /// TLS certificate chain (PEM); with --tls-key, clients connect with grpc+tls://.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Memory one query may use, e.g. 2GiB; past it the query fails with RESOURCE_EXHAUSTED.
    #[arg(long, value_parser = crate::parse_size, default_value = "2GiB")]
    query_memory_limit: usize,
    /// Longest a query may run: 30s, 5m.
    #[arg(long, value_parser = crate::parse_duration, default_value = "5m")]
    query_timeout: Duration,
    /// Queries running at once; more wait for one to finish.
    #[arg(long, default_value_t = 8)]
    max_concurrent_queries: usize,
    /// Partitions (threads) per query; default: the number of cores.
    #[arg(long)]
    target_partitions: Option<usize>,
}

/// Queries and refusals as segflow's log lines (`query`, `refused` events).
struct Log;

/// A statement as one log line: whitespace folded, at most 500 characters.
fn one_line(sql: &str) -> String {
    let folded = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match folded.char_indices().nth(500) {
        Some((i, _)) => format!("{}...", &folded[..i]),
        None => folded,
    }
}

impl QueryLog for Log {
    fn query(&self, r: &QueryRecord) {
        let ms = r.duration.as_secs_f64() * 1000.0;
        let sql = one_line(&r.sql);
        let level = if r.error.is_some() { "warn" } else { "info" };
        log::event(
            level,
            r.run_id.as_deref(),
            None,
            "query",
            json!({
                "user": r.user,
                "duration_ms": (ms * 10.0).round() / 10.0,
                "rows": r.rows,
                "error": r.error,
                "sql": sql,
            }),
            || {
                let outcome = match &r.error {
                    Some(e) => format!("error: {e}"),
                    None => "ok".into(),
                };
                format!(
                    "query user={} rows={} duration_ms={ms:.1} run={} {outcome} | {sql}",
                    r.user,
                    r.rows,
                    r.run_id.as_deref().unwrap_or("-"),
                )
            },
        );
    }

    fn serving(&self, run_id: &str, tables: usize) {
        log::event(
            "info",
            Some(run_id),
            None,
            "serving",
            json!({ "tables": tables }),
            || format!("serving the {tables} tables of run {run_id}"),
        );
    }

    fn refused(&self, peer: Option<SocketAddr>, reason: &str) {
        let peer = peer.map(|p| p.to_string());
        log::event(
            "warn",
            None,
            None,
            "refused",
            json!({ "peer": peer, "reason": reason }),
            || format!("refused {}: {reason}", peer.as_deref().unwrap_or("-")),
        );
    }
}

/// The tokens of SEGFLOW_SERVE_TOKENS and --token-file; blanked out of every log line.
fn tokens(args: &Args) -> Result<Tokens, segflow_serve::Error> {
    let mut tokens = match std::env::var("SEGFLOW_SERVE_TOKENS") {
        Ok(list) => Tokens::from_list(&list)?,
        Err(_) => Tokens::default(),
    };
    if let Some(file) = &args.token_file {
        tokens = tokens.merge(Tokens::from_file(file)?)?;
    }
    log::redact(tokens.secrets());
    Ok(tokens)
}

pub async fn run(args: Args) -> ExitCode {
    let plan = match crate::load(&args.pipeline, &args.vars) {
        Ok(p) => p,
        Err(e) => return out::fail(&e, e.class()),
    };
    let auth = if args.no_auth {
        Auth::Disabled
    } else {
        match tokens(&args) {
            Ok(t) => Auth::Tokens(t),
            Err(e) => return out::fail(&e, e.class()),
        }
    };
    let options = ServeOptions {
        listen: args.listen,
        auth,
        tls: args
            .tls_cert
            .clone()
            .zip(args.tls_key.clone())
            .map(|(cert, key)| TlsFiles { cert, key }),
        limits: Limits {
            query_memory: args.query_memory_limit,
            query_timeout: args.query_timeout,
            concurrent_queries: args.max_concurrent_queries,
        },
    };
    let ctx = match session::new_session(&SessionOptions {
        target_partitions: args.target_partitions,
        memory_limit_bytes: None,
    })
    .and_then(|ctx| segflow_core::storage::configure(&ctx, &plan.storage).map(|()| ctx))
    {
        Ok(c) => c,
        Err(e) => return out::fail(&e, e.class()),
    };
    let ready = |l: &Listening| {
        let scheme = if l.tls { "grpc+tls" } else { "grpc" };
        log::event(
            "info",
            l.run_id.as_deref(),
            None,
            "listening",
            json!({ "address": l.addr.to_string(), "tls": l.tls, "tables": l.tables }),
            || {
                format!(
                    "segflow serve listening on {} ({scheme}://{}; {} tables of run {})",
                    l.addr,
                    l.addr,
                    l.tables,
                    l.run_id.as_deref().unwrap_or("none yet")
                )
            },
        );
    };
    let result = segflow_serve::serve(
        ctx,
        plan.runs.clone(),
        options,
        Arc::new(Log),
        ready,
        stop_signal(),
    )
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => out::fail(&e, e.class()),
    }
}

/// SIGINT or SIGTERM: stop taking calls, let running ones finish, exit 0.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_log_on_one_bounded_line() {
        assert_eq!(
            one_line("select *\n  from t\twhere x = 1"),
            "select * from t where x = 1"
        );
        let long = "x ".repeat(400);
        let line = one_line(&long);
        assert!(
            line.ends_with("...") && line.chars().count() == 503,
            "{}",
            line.len()
        );
    }
}
