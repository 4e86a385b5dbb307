#!/usr/bin/env bash
# The customers of a benchmark size, for ci/bench*.sh: S 100,000, M 1,000,000, L 5,000,000.
#   customers=$(ci/bench/customers.sh "$size") || exit 2
case "${1:-}" in
    S) echo 100000 ;;
    M) echo 1000000 ;;
    L) echo 5000000 ;;
    *) echo "unknown size \`${1:-}\`: S (100k customers), M (1M) or L (5M)" >&2; exit 2 ;;
esac
