#!/usr/bin/env bash
# The default pipeline on the embedded engine and on a loopback Ballista cluster (segflow
# scheduler + executors, all on this machine), same data, alternating, then per-stage medians
# and the cluster's overhead (ci/bench/cluster_summary.py).
#
#   ci/bench-cluster.sh [S|M]      S: 100k customers (default), M: 1M; about 10 orders each
#
# Three setups share the machine's cores equally: `local` (one process, --target-partitions
# = cores), `1x` (one executor running `cores` tasks at once) and `2x` (two executors, half
# the tasks each). Every run's manifest gives its stage times; the cluster runs must publish
# the same customer_segments as the local one (checked with DuckDB). ROUNDS (default 3) sets
# the rounds; BENCH_PROFILE=release times a release binary (its first build takes 40+
# minutes), as ci/bench.sh does. Data is shared with ci/bench.sh under
# $CARGO_TARGET_DIR/bench/<size>.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-S}
customers=$(ci/bench/customers.sh "$size") || exit 2
target="${CARGO_TARGET_DIR:-target}"
venv=$(ci/pyenv.sh)
profile=${BENCH_PROFILE:-debug}
rounds=${ROUNDS:-3}
if [ "$profile" = release ]; then
    cargo build -p segflow-cli --locked --quiet --release
else
    cargo build --workspace --all-targets --locked --quiet
fi
bin="$target/$profile/segflow"
dir="$target/bench/$size"
ci/bench/generate.sh "$bin" "$customers" 42 "$dir"
cores=$(nproc)
half=$(( cores > 1 ? cores / 2 : 1 ))
work="$dir/cluster"
rm -rf "$work"
mkdir -p "$work"
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap stop EXIT
# A free loopback port whose next port is free too: an executor serves on both.
free_port_pair() {
    "$venv/bin/python" - <<'PY'
import socket
while True:
    a = socket.socket(); a.bind(("127.0.0.1", 0)); port = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", port + 1))
    except OSError:
        continue
    print(port)
    break
PY
}
# start_cluster N TASKS: a scheduler and N executors of TASKS slots; sets $engine.
start_cluster() {
    local n=$1 tasks=$2 port
    "$bin" scheduler --bind 127.0.0.1:0 > "$work/scheduler.out" 2> "$work/scheduler.log" &
    pids+=($!)
    for _ in $(seq 100); do grep -q listening "$work/scheduler.out" 2>/dev/null && break; sleep 0.1; done
    engine="ballista://$(sed -n 's/.*listening on //p' "$work/scheduler.out")"
    for i in $(seq "$n"); do
        # Another process may take the ports between the check and the bind: start again.
        for attempt in 1 2 3; do
            port=$(free_port_pair)
            "$bin" executor --scheduler "${engine#ballista://}" --bind "127.0.0.1:$port" \
                --concurrent-tasks "$tasks" --work-dir "$work/executor-$i" --id "executor-$i" \
                2> "$work/executor-$i.log" &
            local pid=$!
            for _ in $(seq 300); do
                (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$pid" 2>/dev/null; then pids+=("$pid"); break; fi
            echo "executor-$i did not start (attempt $attempt):" >&2
            tail -3 "$work/executor-$i.log" >&2
            [ "$attempt" = 3 ] && exit 1
        done
    done
}
run() { # run NAME [args...]: the default pipeline into $work/NAME
    local name=$1; shift
    rm -rf "${work:?}/$name"
    /usr/bin/time -v -o "$work/$name.time" "$bin" run pipelines/customer_segmentation.yaml \
        --var "input=$dir/in" --var "output=$work/$name" --var as_of=2025-06-01 "$@" \
        > "$work/$name.log" 2>&1 || { cat "$work/$name.log"; exit 1; }
}
records="$work/records.jsonl"
for r in $(seq "$rounds"); do
    echo "round $r/$rounds ($size, $customers customers, $cores cores)" >&2
    run local --target-partitions "$cores"
    start_cluster 1 "$cores"
    run 1x --engine "$engine" --target-partitions "$cores"
    stop
    start_cluster 2 "$half"
    run 2x --engine "$engine" --target-partitions "$cores"
    stop
    "$venv/bin/python" ci/bench/cluster_summary.py record "$work" >> "$records"
done
"$venv/bin/python" ci/bench/cluster_summary.py report "$records" "$size" "$customers" "$cores"
