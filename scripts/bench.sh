#!/usr/bin/env bash
# portmap's benchmark suite, one command: builds portmap and portmap-bench in release, then measures
# apply / one-mapping change / plan / peak RSS / dataplane at N mappings against `nft -f` of the same
# ruleset and against N linear DNAT rules, in throwaway network namespaces (needs root). Prints a
# markdown table of results and ratios; docs/performance.md records a run.
#
#   sudo ./scripts/bench.sh                      # N = 1k, 10k, 50k, median of 5
#   sudo ./scripts/bench.sh --quick              # small N, what CI runs so the suite cannot rot
#   sudo ./scripts/bench.sh --sizes 10000 --repeat 9 --markdown /tmp/bench.md
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "the benchmarks build network namespaces and need root: sudo $0" >&2
    exit 1
fi
command -v nft >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null; }
cargo build --release --quiet --locked -p portmap -p portmap-bench
target_dir=${CARGO_TARGET_DIR:-target}
exec "$target_dir/release/portmap-bench" --portmap "$target_dir/release/portmap" "$@"
