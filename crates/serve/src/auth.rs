//! Who may query: bearer tokens, each with the name the query log shows for it.
//!
//! Tokens come from `SEGFLOW_SERVE_TOKENS` (comma-separated) or a token file (one per line,
//! `#` comments). An entry is `NAME:SECRET`, or a bare `SECRET` whose name is `token-` and the
//! first 8 hex digits of its SHA-256 (so the log can tell tokens apart without showing one).
//! Clients send `authorization: Bearer SECRET` on every call (ADBC:
//! `adbc.flight.sql.authorization_header`; the JDBC driver: `token=`), or HTTP Basic with the
//! secret as the password (`user=anything`, `password=SECRET`), which the handshake answers
//! with the bearer header.
//!
//! Secrets are compared by their SHA-256 digests, so the comparison's time does not depend on
//! how much of a guess matches.

use std::path::Path;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::error::{Error, Result};

/// Shortest secret accepted: a token is a password for the published data.
pub const MIN_SECRET_LEN: usize = 16;

/// The authenticated caller of a request (in the request's extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User(pub String);

/// The tokens the server accepts.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    name: String,
    digest: [u8; 32],
    secret: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl Tokens {
    /// Tokens from `SEGFLOW_SERVE_TOKENS`'s value: comma-separated entries.
    pub fn from_list(text: &str) -> Result<Tokens> {
        Self::parse(text.split(','), "SEGFLOW_SERVE_TOKENS")
    }

    /// Tokens from a token file: one entry per line; blank lines and `#` comments are skipped.
    pub fn from_file(path: &Path) -> Result<Tokens> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let lines = text.lines().filter(|l| !l.trim_start().starts_with('#'));
        Self::parse(lines, &path.display().to_string())
    }

    fn parse<'a>(entries: impl Iterator<Item = &'a str>, source: &str) -> Result<Tokens> {
        let mut tokens = Tokens::default();
        for (i, raw) in entries.enumerate() {
            let entry = raw.trim();
            if entry.is_empty() {
                continue;
            }
            let (name, secret) = match entry.split_once(':') {
                Some((n, s)) => (n.trim().to_string(), s.trim().to_string()),
                None => {
                    let d = digest(entry);
                    let hex: String = d[..4].iter().map(|b| format!("{b:02x}")).collect();
                    (format!("token-{hex}"), entry.to_string())
                }
            };
            let at = format!("{source}, entry {}", i + 1);
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::Config(format!(
                    "{at}: the name before `:` must be a word without spaces (NAME:SECRET)"
                )));
            }
            if secret.chars().count() < MIN_SECRET_LEN {
                return Err(Error::Config(format!(
                    "{at} (`{name}`): the secret is shorter than {MIN_SECRET_LEN} characters; \
                     generate one, e.g. `openssl rand -hex 24`"
                )));
            }
            if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::Config(format!(
                    "{at} (`{name}`): the secret has a space or control character"
                )));
            }
            if tokens.entries.iter().any(|e| e.name == name) {
                return Err(Error::Config(format!(
                    "{at}: the name `{name}` is given twice; give each token its own name"
                )));
            }
            tokens.entries.push(Entry {
                name,
                digest: digest(&secret),
                secret,
            });
        }
        Ok(tokens)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds `other`'s tokens (the environment's and a file's together).
    pub fn merge(mut self, other: Tokens) -> Result<Tokens> {
        for e in other.entries {
            if self.entries.iter().any(|x| x.name == e.name) {
                return Err(Error::Config(format!(
                    "the token name `{}` is in both SEGFLOW_SERVE_TOKENS and the token file",
                    e.name
                )));
            }
            self.entries.push(e);
        }
        Ok(self)
    }

    /// The secrets, for the log to blank out wherever they would appear.
    pub fn secrets(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.secret.clone()).collect()
    }

    /// The name of the token `secret`, if it is one.
    fn check(&self, secret: &str) -> Option<&str> {
        let d = digest(secret);
        // Every entry is compared, so the time does not say which one matched.
        let mut found = None;
        for e in &self.entries {
            if e.digest == d {
                found = Some(e.name.as_str());
            }
        }
        found
    }
}

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    Tokens(Tokens),
    /// `--no-auth`, on a loopback address only: every caller is `anonymous`.
    Disabled,
}

/// The credential a request carries.
enum Credential {
    Bearer(String),
    Basic { password: String },
}

fn credential(metadata: &MetadataMap) -> Result<Option<Credential>, Status> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Some(Credential::Bearer(rest.trim().to_string())));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Status::unauthenticated("the Basic credentials are not valid base64"))?;
        let (_user, password) = decoded.split_once(':').unwrap_or(("", decoded.as_str()));
        return Ok(Some(Credential::Basic {
            password: password.to_string(),
        }));
    }
    Err(Status::unauthenticated(format!(
        "unsupported authorization scheme `{scheme}`: send `authorization: Bearer <token>`"
    )))
}

impl Auth {
    /// The caller of a request with these headers, or `UNAUTHENTICATED` saying what is wrong
    /// (never echoing what was sent).
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<User, Status> {
        let tokens = match self {
            Auth::Disabled => return Ok(User("anonymous".into())),
            Auth::Tokens(t) => t,
        };
        let secret = match credential(metadata)? {
            None => {
                return Err(Status::unauthenticated(
                    "a bearer token is required: send `authorization: Bearer <token>` \
                     (ADBC: adbc.flight.sql.authorization_header; JDBC: token=<token>)",
                ));
            }
            Some(Credential::Bearer(s)) | Some(Credential::Basic { password: s }) => s,
        };
        match tokens.check(&secret) {
            Some(name) => Ok(User(name.to_string())),
            None => Err(Status::unauthenticated(
                "the token is not valid for this server",
            )),
        }
    }

    /// The bearer header a handshake answers with: the secret the client authenticated with,
    /// so that a client that logged in with Basic credentials sends it on every later call.
    pub fn bearer_for(&self, metadata: &MetadataMap) -> Option<String> {
        match (self, credential(metadata).ok()??) {
            (Auth::Disabled, _) => None,
            (_, Credential::Bearer(s)) | (_, Credential::Basic { password: s }) => {
                Some(format!("Bearer {s}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    const SECRET: &str = "0123456789abcdef-analyst";

    #[test]
    fn named_and_bare_tokens_authenticate_as_their_names() {
        let tokens = Tokens::from_list(&format!("bi:{SECRET}, 0123456789abcdef-bare")).unwrap();
        let auth = Auth::Tokens(tokens);
        assert_eq!(
            auth.authenticate(&headers(&format!("Bearer {SECRET}")))
                .unwrap()
                .0,
            "bi"
        );
        let bare = auth
            .authenticate(&headers("Bearer 0123456789abcdef-bare"))
            .unwrap()
            .0;
        assert!(bare.starts_with("token-") && bare.len() == 14, "{bare}");
        assert!(!bare.contains("0123456789abcdef"));
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("anyone:{SECRET}"));
        assert_eq!(
            auth.authenticate(&headers(&format!("Basic {basic}")))
                .unwrap()
                .0,
            "bi"
        );
        assert_eq!(
            auth.bearer_for(&headers(&format!("Basic {basic}"))),
            Some(format!("Bearer {SECRET}"))
        );
    }

    #[test]
    fn missing_wrong_and_odd_credentials_are_unauthenticated() {
        let auth = Auth::Tokens(Tokens::from_list(&format!("bi:{SECRET}")).unwrap());
        for h in [
            None,
            Some("Bearer nope-nope-nope-nope"),
            Some("Bearer "),
            Some("Digest abc"),
        ] {
            let m = h.map(headers).unwrap_or_default();
            let err = auth.authenticate(&m).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{h:?}");
            assert!(!err.message().contains("nope-nope"), "{}", err.message());
        }
        let open = Auth::Disabled;
        assert_eq!(
            open.authenticate(&MetadataMap::new()).unwrap().0,
            "anonymous"
        );
    }

    #[test]
    fn weak_duplicate_or_malformed_tokens_are_refused_with_the_entry() {
        let short = Tokens::from_list("a:short").unwrap_err().to_string();
        assert!(
            short.contains("entry 1") && short.contains("shorter"),
            "{short}"
        );
        let twice = Tokens::from_list(&format!("a:{SECRET},a:{SECRET}x"))
            .unwrap_err()
            .to_string();
        assert!(
            twice.contains("entry 2") && twice.contains("twice"),
            "{twice}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, format!("# BI team\n\nbi:{SECRET}\n")).unwrap();
        let t = Tokens::from_file(&file).unwrap();
        assert_eq!(t.len(), 1);
        assert!(format!("{t:?}").contains("bi") && !format!("{t:?}").contains(SECRET));
    }
}
