//! The default pipeline, unchanged, against a real S3-compatible server on 127.0.0.1 (moto):
//! inputs read from the bucket, run tables, manifests and Delta outputs written to it, with
//! credentials and endpoint from the standard `AWS_*` environment variables.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use segflow_core::datafusion::prelude::SessionContext;

use crate::{default_pipeline, read_table, run, segflow, text};

pub const BUCKET: &str = "segflow";

/// A moto S3 server on a free loopback port, stopped when dropped.
pub struct S3Server {
    child: Child,
    endpoint: String,
}

impl S3Server {
    pub fn start() -> S3Server {
        let bin = moto_server();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        server.create_bucket();
        server
    }

    /// moto accepts unsigned requests, and object_store cannot create buckets.
    fn create_bucket(&self) {
        use std::io::{Read, Write};
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "PUT /{BUCKET} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "create bucket: {reply}");
    }

    /// The variables a scheduler would set: no pipeline change needed.
    pub fn env(&self) -> [(&'static str, String); 5] {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "segflow-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "segflow-test-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_bucket_name(BUCKET)
                .with_region("us-east-1")
                .with_access_key_id("segflow-test")
                .with_secret_access_key("segflow-test-secret")
                .build()
                .unwrap(),
        )
    }

    pub fn upload(&self, dir: &Path, prefix: &str) {
        let store = self.store();
        let rt = tokio::runtime::Runtime::new().unwrap();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let name = entry.file_name().into_string().unwrap();
            let bytes = std::fs::read(entry.path()).unwrap();
            let key = object_store::path::Path::from(format!("{prefix}/{name}"));
            rt.block_on(store.put(&key, PutPayload::from(bytes)))
                .unwrap();
        }
    }

    /// A session that reads the bucket.
    pub fn context(&self) -> SessionContext {
        let ctx = SessionContext::new();
        let bucket = url::Url::parse(&format!("s3://{BUCKET}")).unwrap();
        ctx.runtime_env()
            .register_object_store(&bucket, self.store());
        ctx
    }

    /// A published table in the bucket, read back through delta-rs as a BI reader would.
    fn read_table(&self, path: &str, columns: &str) -> (u64, Vec<Vec<String>>) {
        let ctx = self.context();
        let url = url::Url::parse(&format!("s3://{BUCKET}/{path}/")).unwrap();
        let sql = format!("select {columns} from t order by 1");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (version, batches) = rt.block_on(segflow_testkit::delta::query_in(&ctx, &url, &sql));
        (version, segflow_testkit::delta::rows(&batches))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto's server: `SEGFLOW_MOTO_SERVER`, set by `ci/test.sh`, which installs it.
fn moto_server() -> PathBuf {
    let from_env = std::env::var_os("SEGFLOW_MOTO_SERVER").map(PathBuf::from);
    let in_target = segflow_testkit::repo_root().join("target/pyenv/bin/moto_server");
    from_env
        .or_else(|| in_target.exists().then_some(in_target))
        .expect(
            "the S3 tests need moto's server: run ci/test.sh (it installs moto into \
             $CARGO_TARGET_DIR/pyenv) or set SEGFLOW_MOTO_SERVER to a moto_server binary",
        )
}

const SEGMENT_COLS: &str = "customer_id, recency_days, frequency, monetary, rfm_segment";
const QUARANTINE_COLS: &str = "table_name, line_number, reason, column_name, raw_record";

#[test]
fn default_pipeline_runs_unchanged_on_s3_and_matches_a_local_run() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let (input, local_out) = (dir.path().join("in"), dir.path().join("out"));
    crate::generate_with(&input, 400, 8, Some(0.01));
    s3.upload(&input, "crm/2026-11-23");

    let run_s3 = || {
        segflow()
            .envs(s3.env())
            .arg("run")
            .arg(default_pipeline())
            .args(["--var", &format!("input=s3://{BUCKET}/crm/2026-11-23")])
            .args(["--var", &format!("output=s3://{BUCKET}/segments")])
            .args(["--var", "as_of=2025-06-01"])
            .output()
            .unwrap()
    };
    let first = run_s3();
    assert!(first.status.success(), "{}", text(&first));
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        !stdout.contains("segflow-test-secret"),
        "credentials never reach logs"
    );

    let local = run(
        &default_pipeline(),
        &input,
        &local_out,
        &["as_of=2025-06-01"],
    );
    assert!(local.status.success(), "{}", text(&local));

    let (v, on_s3) = s3.read_table("segments/customer_segments", SEGMENT_COLS);
    assert_eq!(v, 0);
    assert_eq!(on_s3.len(), 400 - customers_quarantined(&input));
    assert_eq!(
        on_s3,
        read_table(&local_out, "customer_segments", SEGMENT_COLS).1
    );
    // `order by 1` leaves ties in any order: compare sorted.
    let (_, mut quarantine) = s3.read_table("segments/quarantine", QUARANTINE_COLS);
    let (_, mut local_quarantine) = read_table(&local_out, "quarantine", QUARANTINE_COLS);
    quarantine.sort();
    local_quarantine.sort();
    assert!(!quarantine.is_empty());
    assert!(
        quarantine == local_quarantine,
        "quarantine differs from the local run's"
    );
    for table in ["customers", "orders", "events", "survey_responses"] {
        let path = format!("staging/{table}");
        assert_eq!(
            s3.read_table(&format!("segments/{path}"), "count(*)").1,
            read_table(&local_out, &path, "count(*)").1,
            "{table}"
        );
    }

    // A second run commits the next version in the bucket; its manifest lands there too.
    let second = run_s3();
    assert!(second.status.success(), "{}", text(&second));
    let (v, again) = s3.read_table("segments/customer_segments", SEGMENT_COLS);
    assert_eq!((v, &again), (1, &on_s3));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let manifests = rt
        .block_on(async {
            use futures::TryStreamExt;
            s3.store()
                .list(Some(&"segments/_runs".into()))
                .try_collect::<Vec<_>>()
                .await
        })
        .unwrap();
    // Manifests, not the lease's records (`_lease/`) or the publish pointer.
    let json: Vec<_> = manifests
        .iter()
        .filter(|m| m.location.extension() == Some("json"))
        .filter(|m| {
            m.location
                .as_ref()
                .strip_prefix("segments/_runs/")
                .is_some_and(|name| !name.contains('/') && !name.starts_with('_'))
        })
        .collect();
    assert_eq!(json.len(), 2, "{manifests:?}");
    // Besides them only the lease's newest records and the publish pointer.
    let others: Vec<_> = manifests
        .iter()
        .map(|m| m.location.as_ref())
        .filter(|l| !json.iter().any(|j| j.location.as_ref() == *l))
        .filter(|l| {
            !l.starts_with("segments/_runs/_lease/") && *l != "segments/_runs/_published.json"
        })
        .collect();
    assert!(others.is_empty(), "run work left behind: {others:?}");
}

fn customers_quarantined(input: &Path) -> usize {
    std::fs::read_to_string(input.join("corrupted_rows.csv"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("customers,"))
        .count()
}
