//! Connecting to PostgreSQL, and what its errors mean to a scheduler.
//!
//! The URL is a libpq URL or key=value string (`postgres://segflow@db:5432/crm`); a password
//! missing from it comes from `PGPASSWORD`, as libpq's does. The URL is never printed: errors
//! name the server as `host:port/database as user`.

use std::str::FromStr as _;
use std::time::Duration;

use segflow_core::ErrorClass;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::error::{ExportError, Result};

/// Where a sync connects, parsed.
#[derive(Clone)]
pub struct Target {
    config: Config,
    /// `host:port/database as user`, for messages.
    pub display: String,
}

impl std::fmt::Debug for Target {
    // The config holds the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("display", &self.display)
            .finish()
    }
}

impl Target {
    /// Parses `url`; `password` (from `PGPASSWORD`) is used when the URL has none.
    pub fn parse(url: &str, password: Option<String>) -> Result<Target> {
        let mut config = Config::from_str(url.trim()).map_err(|e| {
            // tokio-postgres' parse errors say what is wrong without echoing the input.
            ExportError::Settings(format!(
                "postgres_url is not a valid PostgreSQL URL ({e}); write it as \
                 postgres://USER@HOST:PORT/DATABASE, with the password in PGPASSWORD"
            ))
        })?;
        if config.get_hosts().is_empty() {
            return Err(ExportError::Settings(
                "postgres_url names no host; write it as postgres://USER@HOST:PORT/DATABASE".into(),
            ));
        }
        if config.get_password().is_none()
            && let Some(p) = password.filter(|p| !p.is_empty())
        {
            config.password(p);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(30));
        }
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(ExportError::Settings(
                "postgres_url asks for sslmode=require, and segflow's PostgreSQL sync connects \
                 without TLS; reach a remote server through an SSH tunnel or a TLS proxy on \
                 loopback, or use sslmode=disable on a trusted network"
                    .into(),
            ));
        }
        config.application_name("segflow");
        let host = match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or("(no user)").to_string();
        let db = config.get_dbname().unwrap_or(&user).to_string();
        let display = format!("{host}:{port}/{db} as {user}");
        Ok(Target { config, display })
    }

    /// An open session; its connection runs on the current runtime until the client drops.
    pub async fn connect(&self) -> Result<Client> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| self.error("connecting", e))?;
        let server = self.display.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("PostgreSQL connection to {server} closed: {e}");
            }
        });
        Ok(client)
    }

    /// A PostgreSQL error in `context`, with the server's detail and hint and its class.
    pub fn error(&self, context: impl Into<String>, e: tokio_postgres::Error) -> ExportError {
        let message = match e.as_db_error() {
            Some(db) => {
                let mut m = format!("{} (SQLSTATE {})", db.message(), db.code().code());
                if let Some(d) = db.detail() {
                    m.push_str(&format!("; {d}"));
                }
                if let Some(h) = db.hint() {
                    m.push_str(&format!("; hint: {h}"));
                }
                m
            }
            None => {
                // The client's own message, with the I/O error under it (connection refused).
                let mut m = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    m.push_str(&format!(": {s}"));
                    source = s.source();
                }
                m
            }
        };
        ExportError::Postgres {
            target: self.display.clone(),
            context: context.into(),
            message,
            class: class(&e),
            source: e,
        }
    }
}

/// Retryable: the server could not be reached, was starting or stopping, had no connection
/// slot, or the transaction lost a race (serialization failure, deadlock). Not retryable:
/// refused credentials or privileges, a missing database, SQL or data the server rejects.
pub fn class(e: &tokio_postgres::Error) -> ErrorClass {
    if let Some(code) = e.code() {
        let transient = [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::QUERY_CANCELED,
        ];
        if transient.contains(code) || code.code().starts_with("08") {
            return ErrorClass::Transient;
        }
        if code.code().starts_with("22") || code.code().starts_with("23") {
            return ErrorClass::Data;
        }
        return ErrorClass::Failed;
    }
    // No SQLSTATE: the client failed (I/O, a closed connection, a timeout).
    if e.is_closed() {
        return ErrorClass::Transient;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            return match io.kind() {
                K::PermissionDenied | K::NotFound | K::InvalidInput => ErrorClass::Failed,
                _ => ErrorClass::Transient,
            };
        }
        source = s.source();
    }
    // tokio-postgres reports a connect timeout without an I/O source.
    if e.to_string().contains("timeout") {
        return ErrorClass::Transient;
    }
    ErrorClass::Failed
}

/// `"name"`, with quotes doubled: an identifier as PostgreSQL reads it.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with quotes doubled: a string literal (comments).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_server_never_the_password() {
        let t = Target::parse("postgres://bi:s3cret@db.example:6432/crm", None).unwrap();
        assert_eq!(t.display, "db.example:6432/crm as bi");
        assert!(!format!("{t:?}").contains("s3cret"));
        let t = Target::parse("host=localhost user=segflow", Some("pw".into())).unwrap();
        assert_eq!(t.display, "localhost:5432/segflow as segflow");
    }

    #[test]
    fn bad_urls_are_settings_errors_without_the_url() {
        let e = Target::parse("postgres://u:hunter2@[::1", None).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Invalid);
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = Target::parse("postgres://u@h/db?sslmode=require", None).unwrap_err();
        assert!(e.to_string().contains("sslmode=require"), "{e}");
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
