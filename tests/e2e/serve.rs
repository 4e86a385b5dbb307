//! `segflow serve` from a Flight SQL client: the ADBC driver (tests/serve/flight_sql.py) against
//! a server on a random loopback port over a freshly published output. One test, in steps, so
//! the pipeline runs twice in all (the second run is the one that publishes while queries
//! loop).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{default_pipeline, generate, python, run, segflow, text};

const TOKEN: &str = "bi-team-0123456789abcdef";

/// A `segflow serve` process, killed when dropped; its stderr (the query log) is collected.
struct Server {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(output: &Path, args: &[&str], tokens: Option<&str>) -> Server {
        let mut child = serve_command(output, tokens)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start segflow serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("segflow serve listening on ").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("segflow serve did not listen:\n{}", log.lock().unwrap());
            }
        };
        Server { child, addr, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `segflow serve` of the default pipeline over `output`, with `tokens` as
/// SEGFLOW_SERVE_TOKENS (none: unset).
fn serve_command(output: &Path, tokens: Option<&str>) -> Command {
    let mut cmd = segflow();
    cmd.arg("serve")
        .arg(default_pipeline())
        .arg("--var")
        .arg(format!("output={}", output.display()))
        .env_remove("SEGFLOW_SERVE_TOKENS");
    if let Some(t) = tokens {
        cmd.env("SEGFLOW_SERVE_TOKENS", t);
    }
    cmd
}

/// tests/serve/flight_sql.py, to be given its mode and arguments.
fn flight_sql_command() -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(segflow_testkit::repo_root().join("tests/serve/flight_sql.py"));
    cmd
}

fn flight_sql(args: &[&str]) -> Output {
    flight_sql_command()
        .args(args)
        .output()
        .expect("run tests/serve/flight_sql.py")
}

#[test]
fn bi_tools_query_one_published_run_read_only_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    generate(&input, 200, 11);
    let first = run(&default_pipeline(), &input, &output, &[]);
    assert!(first.status.success(), "{}", text(&first));

    let server = Server::start(&output, &[], Some(&format!("bi:{TOKEN}")));
    let uri = format!("grpc://{}", server.addr);
    let out = flight_sql(&["check", &uri, TOKEN, output.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}\nserver log:\n{}",
        text(&out),
        server.log()
    );

    // Queries in a loop while a second run (another as_of) publishes: each sees one run's
    // tables, the old or the new, never a mix and never an error; the new one with no restart.
    let stop = dir.path().join("stop");
    let result = dir.path().join("loop.json");
    let mut looping = flight_sql_command()
        .args(["loop", &uri, TOKEN])
        .arg(&stop)
        .arg(&result)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = dir.path().join("stop.ready");
    let waited = Instant::now();
    while !ready.exists() {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the query loop did not start"
        );
        if let Some(status) = looping.try_wait().unwrap() {
            panic!("the query loop ended early: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = run(&default_pipeline(), &input, &output, &["as_of=2025-06-01"]);
    std::fs::write(&stop, "").unwrap();
    let looped = looping.wait_with_output().unwrap();
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        looped.status.success(),
        "{}\nserver log:\n{}",
        text(&looped),
        server.log()
    );
    println!("{}", String::from_utf8_lossy(&looped.stdout));
    let seen: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    let as_ofs = seen["seen"].as_object().unwrap();
    assert!(
        as_ofs.contains_key("2025-06-01"),
        "the new run was not seen: {seen}"
    );
    assert_eq!(as_ofs.len(), 2, "{seen}");

    // One log line per query, with its user, rows and duration; refusals logged; the token
    // never.
    let log = server.log();
    assert!(log.contains("query user=bi rows=1 "), "{log}");
    assert!(log.contains("duration_ms="), "{log}");
    assert!(log.contains("error: segflow serve is read-only"), "{log}");
    assert!(log.contains("refused 127.0.0.1:"), "{log}");
    // The second run was announced when the first query after its publish saw it.
    let second_run = crate::newest_manifest(&output)["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        log.contains(&format!("serving the 17 tables of run {second_run}")),
        "{log}"
    );
    assert!(!log.contains(TOKEN), "the token is in the log:\n{log}");
    drop(server);

    limits_and_tls(dir.path(), &output);
    refuses_to_start_unprotected(&output);
}

/// A server with TLS, tokens from a file, and small limits: a query past the memory limit and
/// one past the timeout fail, and the server answers the next one.
fn limits_and_tls(dir: &Path, output: &Path) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl makes a test certificate");
    assert!(made.status.success(), "{}", text(&made));
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("# test\nops:{TOKEN}\n")).unwrap();
    let server = Server::start(
        output,
        &[
            "--token-file",
            tokens.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--query-memory-limit",
            "4MiB",
            "--query-timeout",
            "3s",
        ],
        None,
    );
    let uri = format!("grpc+tls://{}", server.addr);
    let out = flight_sql(&["limits", &uri, TOKEN, cert.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}\nserver log:\n{}",
        text(&out),
        server.log()
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));
    let log = server.log();
    assert!(log.contains("query user=ops"), "{log}");
    assert!(log.contains("--query-timeout"), "{log}");
}

/// No token configured, or `--no-auth` off loopback: the server does not start (exit 2).
fn refuses_to_start_unprotected(output: &Path) {
    let start = |args: &[&str], tokens| serve_command(output, tokens).args(args).output().unwrap();
    let none = start(&["--listen", "127.0.0.1:0"], None);
    assert_eq!(none.status.code(), Some(2), "{}", text(&none));
    assert!(
        text(&none).contains("no token is configured"),
        "{}",
        text(&none)
    );
    let open = start(&["--listen", "0.0.0.0:0", "--no-auth"], None);
    assert_eq!(open.status.code(), Some(2), "{}", text(&open));
    assert!(text(&open).contains("loopback"), "{}", text(&open));
    let weak = start(&[], Some("bi:short"));
    assert_eq!(weak.status.code(), Some(2), "{}", text(&weak));
    assert!(text(&weak).contains("shorter than 16"), "{}", text(&weak));
}
