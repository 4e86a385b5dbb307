# Sourced (with $size set) by the benchmarks that read the full default pipeline's published
# output: builds the release binary and sets bin, dir, output and venv. The output is
# ci/bench.sh's ($CARGO_TARGET_DIR/bench/<size>/full) when it is there; otherwise the data is
# generated and the pipeline run once.
customers=$(ci/bench/customers.sh "$size") || exit 2
target="${CARGO_TARGET_DIR:-target}"
venv=$(ci/pyenv.sh)
cargo build -p segflow-cli --locked --quiet --release
bin="$target/release/segflow"
dir="$target/bench/$size"
output="$dir/full"
ci/bench/generate.sh "$bin" "$customers" 42 "$dir"
if [ ! -f "$output/_runs/_published.json" ]; then
    "$bin" run pipelines/customer_segmentation.yaml --var "input=$dir/in" --var "output=$output"
fi
