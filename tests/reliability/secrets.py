"""Secrets never leave the process: sentinel credentials in AWS_*, in the pipeline's `storage:`
options and in the password of a PostgreSQL URL var must appear in no stdout, stderr (text or JSON log, at every log level), run
manifest, publish pointer, lease record, Delta log or error message.

    secrets.py SEGFLOW_BIN MOTO_SERVER_BIN WORK_DIR

Runs the default pipeline on a loopback moto S3 server (inputs and outputs on s3://) with
sentinel credentials: a run that succeeds, with `--log trace`, in text and in JSON; then a run
that fails on a bucket that does not exist. Then reads back every object in the bucket and
every file the runs wrote, and greps all of it. Exits 1 naming where a sentinel was found.
"""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import boto3

import s3server

REPO = Path(__file__).resolve().parents[2]
# Sentinels: unique strings that appear nowhere unless a secret leaked.
ENV_KEY_ID = "SNTLENVKEYID7Q2"
ENV_SECRET = "sntl-env-secret-9XK3"
ENV_TOKEN = "sntl-env-session-token-4ZP8"
PIPELINE_SECRET = "sntl-pipeline-secret-2MV6"
PG_PASSWORD = "sntl-pg-password-8RW1"
SENTINELS = [ENV_KEY_ID, ENV_SECRET, ENV_TOKEN, PIPELINE_SECRET, PG_PASSWORD]
BUCKET = "secrets"


def main() -> int:
    bin_, moto, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    server, port = s3server.start(moto)
    endpoint = f"http://127.0.0.1:{port}"
    pipeline = REPO / "pipelines" / f".secrets-check-{os.getpid()}.yaml"
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=ENV_KEY_ID, aws_secret_access_key=ENV_SECRET)
        s3.create_bucket(Bucket=BUCKET)
        inp = work / "in"
        subprocess.run([bin_, "generate", "--customers", "200", "--seed", "3", "--out",
                        str(inp)], check=True, capture_output=True)
        for f in inp.iterdir():
            s3.upload_file(str(f), BUCKET, f"in/{f.name}")
        # The default pipeline, with the bucket's secret key in `storage:` from the environment
        # (as the README shows), beside the original so that its relative paths hold.
        text = (REPO / "pipelines/customer_segmentation.yaml").read_text()
        storage = (f"storage:\n  s3://{BUCKET}:\n    endpoint: {endpoint}\n    allow_http: \"true\"\n"
                   f"    access_key_id: {ENV_KEY_ID}\n"
                   f"    secret_access_key: ${{env:SEGFLOW_TEST_PIPELINE_SECRET}}\n")
        text = text.replace("\nstages:\n", f"\n{storage}\nstages:\n", 1)
        # The pipeline's postgres_url, with a password, at a port nothing listens on: the runs
        # publish, then their sync fails to connect (exit 4). The password must not reach the
        # manifest's vars, the sync's error or any log.
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed_port = sock.getsockname()[1]
        pipeline.write_text(text)
        env = dict(os.environ, AWS_ACCESS_KEY_ID=ENV_KEY_ID, AWS_SECRET_ACCESS_KEY=ENV_SECRET,
                   AWS_SESSION_TOKEN=ENV_TOKEN, AWS_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint,
                   AWS_ALLOW_HTTP="true", SEGFLOW_TEST_PIPELINE_SECRET=PIPELINE_SECRET)
        outputs: list[tuple[str, str]] = []
        runs = [
            ("text, trace", ["--log", "trace"], f"s3://{BUCKET}/out", 4),
            ("json, trace", ["--log", "trace", "--log-format", "json"], f"s3://{BUCKET}/out", 4),
            ("failing", ["--log", "debug"], "s3://no-such-bucket/out", None),
        ]
        for name, extra, out, expected in runs:
            r = subprocess.run(
                [bin_, "run", str(pipeline), "--var", f"input=s3://{BUCKET}/in",
                 "--var", f"output={out}",
                 "--var", f"postgres_url=postgresql://sync:{PG_PASSWORD}@127.0.0.1:{closed_port}/crm",
                 *extra],
                capture_output=True, text=True, env=env, cwd=REPO)
            if expected is not None and r.returncode != expected:
                print(f"run `{name}` exited {r.returncode}:\n{r.stderr[-3000:]}")
                return 1
            if expected is None and r.returncode == 0:
                print(f"run `{name}` should have failed")
                return 1
            outputs += [(f"{name}: stdout", r.stdout), (f"{name}: stderr", r.stderr)]
        # Everything the runs stored: manifests, pointer, lease, Delta logs, data files.
        objects = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for o in page.get("Contents", []):
                if o["Key"].startswith("in/"):
                    continue
                body = s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
                outputs.append((f"s3://{BUCKET}/{o['Key']}", body.decode("latin-1")))
                objects += 1
        log_bytes = sum(len(t) for n, t in outputs if "std" in n)
        for where, content in outputs:
            for s in SENTINELS:
                if s in content:
                    line = next(l for l in content.splitlines() if s in l)
                    print(f"secret {s!r} leaked into {where}: {line[:300]}")
                    return 1
        print(f"secrets: 5 sentinels (AWS key id, secret and session token in the environment, a "
              f"secret key in the pipeline's storage: options, the password of the PostgreSQL URL "
              f"its sync stage failed to connect to) found in none of {log_bytes:,} "
              f"bytes of stdout and stderr (text and JSON logs at trace level, a failed run's "
              f"error) and none of the {objects} objects the runs wrote (manifests, "
              f"_published.json, lease records, Delta logs, data files)")
        return 0
    finally:
        pipeline.unlink(missing_ok=True)
        server.kill()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
