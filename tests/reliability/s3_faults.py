"""The default pipeline on S3 through a faulty network (docs/scheduling.md).

    s3_faults.py SEGFLOW_BIN MOTO_SERVER_BIN WORK_DIR [RUNS]

A loopback proxy in front of a moto S3 server answers 10% of requests with 503 SlowDown
without passing them on, and for 1% of writes (PUT, POST, DELETE), and a fifth of Delta
commits (so that every run meets the case), passes the request on, lets the server apply it,
and then drops the connection without an answer: the client cannot know whether its write
happened (for the conditional put of a Delta commit, "commit state unknown").
The default pipeline runs RUNS times (default 3, as_of alternating) through the proxy, and as
many times straight against moto on another prefix. Every run must succeed, and after each,
every table must equal the fault-free output's: exact rows, no duplicate row, and contiguous
Delta versions, one per committing run.
"""

import http.client
import http.server
import json
import os
import random
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
from deltalake import DeltaTable

import s3server

PIPELINE = "pipelines/customer_segmentation.yaml"
BUCKET = "faults"
DATES = ["2025-06-01", "2025-03-01"]


class Faults:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = self.slowdowns = self.dropped = self.commits_dropped = 0
        self.dropped_writes: list[str] = []

    def draw(self, method: str, path: str) -> str:
        with self.lock:
            self.requests += 1
            r = self.rng.random()
            if r < 0.10:
                self.slowdowns += 1
                return "503"
            write = method in ("PUT", "POST", "DELETE")
            # 1% of writes; and, so that every run meets the case, a fifth of Delta commits.
            commit = write and "/_delta_log/" in path and path.endswith(".json")
            if (write and r < 0.11) or (commit and self.rng.random() < 0.2):
                self.dropped += 1
                self.commits_dropped += commit
                self.dropped_writes.append(f"{method} {path}")
                return "drop"
            return "pass"


def proxy(upstream_port: int, faults: Faults) -> tuple[socketserver.ThreadingTCPServer, int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def handle_any(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            fate = faults.draw(self.command, self.path)
            if fate == "503":
                msg = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>"
                       b"<Message>Please reduce your request rate.</Message></Error>")
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(msg)
                return
            conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("connection", "transfer-encoding")}
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            if fate == "drop":
                # The server applied the write; the client never hears of it.
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                # A HEAD answer's length is the object's, not its (empty) body's.
                if k.lower() not in ("connection", "transfer-encoding") and (
                        k.lower() != "content-length" or self.command == "HEAD"):
                    self.send_header(k, v)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    port = s3server.free_port()
    server = Server(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


def rows(url: str, storage: dict) -> list[tuple]:
    t = DeltaTable(url, storage_options=storage).to_pyarrow_table()
    cols = sorted(t.column_names)
    return sorted(tuple(repr(v) for v in r) for r in zip(*[t.column(c).to_pylist() for c in cols]))


def versions(s3, prefix: str) -> list[int]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                            Prefix=prefix + "/_delta_log/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(int(k.rsplit("/", 1)[1].split(".")[0]) for k in keys if k.endswith(".json"))


def main() -> int:
    bin_, moto, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    server, moto_port = s3server.start(moto)
    try:
        direct = f"http://127.0.0.1:{moto_port}"
        s3 = boto3.client("s3", endpoint_url=direct, region_name="us-east-1",
                          aws_access_key_id="k", aws_secret_access_key="s")
        s3.create_bucket(Bucket=BUCKET)
        inp = work / "in"
        subprocess.run([bin_, "generate", "--customers", "300", "--seed", "5", "--out",
                        str(inp)], check=True, capture_output=True)
        for f in inp.iterdir():
            s3.upload_file(str(f), BUCKET, f"in/{f.name}")
        faults = Faults(seed=2026)
        prox, proxy_port = proxy(moto_port, faults)

        def run(endpoint: str, out: str, as_of: str) -> subprocess.CompletedProcess:
            env = dict(os.environ, AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s",
                       AWS_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint, AWS_ALLOW_HTTP="true")
            return subprocess.run(
                [bin_, "run", PIPELINE, "--var", f"input=s3://{BUCKET}/in",
                 "--var", f"output=s3://{BUCKET}/{out}", "--var", f"as_of={as_of}"],
                capture_output=True, text=True, env=env)

        storage = {"AWS_ENDPOINT_URL": direct, "AWS_ACCESS_KEY_ID": "k",
                   "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1",
                   "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
        t0 = time.monotonic()
        compared = 0
        for i in range(runs):
            as_of = DATES[i % 2]
            clean = run(direct, "clean", as_of)
            if clean.returncode != 0:
                print(f"run {i} without faults failed:\n{clean.stderr[-3000:]}")
                return 1
            faulty = run(f"http://127.0.0.1:{proxy_port}", "faulty", as_of)
            if faulty.returncode != 0:
                print(f"run {i} through the faulty proxy failed (exit {faulty.returncode}):\n"
                      f"{faulty.stderr[-3000:]}")
                return 1
            listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="clean/", Delimiter="/")
            tables = [p["Prefix"].rstrip("/") for p in listed.get("CommonPrefixes", [])
                      if not p["Prefix"].startswith("clean/_")]
            staging = s3.list_objects_v2(Bucket=BUCKET, Prefix="clean/staging/", Delimiter="/")
            tables += [p["Prefix"].rstrip("/") for p in staging.get("CommonPrefixes", [])]
            # Delta tables only (the HTML report, report/index.html, is one object).
            tables = [t for t in tables if t != "clean/staging" and s3.list_objects_v2(
                Bucket=BUCKET, Prefix=f"{t}/_delta_log/", MaxKeys=1).get("KeyCount", 0) > 0]
            for t in tables:
                name = t.removeprefix("clean/")
                want = rows(f"s3://{BUCKET}/{t}", storage)
                got = rows(f"s3://{BUCKET}/faulty/{name}", storage)
                if got != want:
                    print(f"run {i}: {name} differs from the fault-free run: {len(got)} rows "
                          f"against {len(want)}, {len(got) - len(set(got))} duplicates")
                    return 1
                vs, clean_vs = versions(s3, f"faulty/{name}"), versions(s3, t)
                if vs != list(range(len(vs))) or vs != clean_vs:
                    print(f"run {i}: {name} has Delta versions {vs}, without faults {clean_vs}")
                    for v in vs:
                        key = f"faulty/{name}/_delta_log/{v:020}.json"
                        log = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
                        for line in log.splitlines():
                            action = json.loads(line)
                            kind = next(iter(action))
                            detail = action[kind] if kind in ("txn", "commitInfo") else ""
                            print(f"  v{v} {kind} {json.dumps(detail)[:200]}")
                    print(faulty.stderr[-2000:])
                    return 1
                compared += 1
        prox.shutdown()
        print(f"s3 faults: {runs} runs of the default pipeline through a proxy that answered "
              f"{faults.slowdowns} of {faults.requests} requests with 503 and dropped the answer "
              f"to {faults.dropped} applied writes ({faults.commits_dropped} of them Delta "
              f"commits); every run succeeded in "
              f"{time.monotonic() - t0:.0f}s, and {compared} table checks found exact rows, no "
              f"duplicate row and the same contiguous Delta versions as the runs without faults")
        if faults.dropped_writes:
            print("  answers dropped: " + ", ".join(faults.dropped_writes[:8])
                  + (" ..." if len(faults.dropped_writes) > 8 else ""))
        return 0
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # deltalake's native threads can abort the interpreter's shutdown ("terminate called
    # without an active exception"): leave without it.
    os._exit(code)
