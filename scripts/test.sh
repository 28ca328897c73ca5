#!/usr/bin/env bash
# Runs every check and test of portmap on a fresh Debian machine: installs what the tests need
# (nftables, iptables, iproute2, conntrack, procps, systemd-analyze, ansible-core, zsh, fish, mandoc,
# cargo-deb), then formatting, lints, docs and the whole test suite. The end-to-end tests
# create their own network namespaces and need root (CAP_NET_ADMIN + CAP_SYS_ADMIN); they fail loudly
# without it unless PORTMAP_TEST_ALLOW_SKIP=1 is set.
set -euo pipefail
cd "$(dirname "$0")/.."

# command → Debian package, for everything the tests run besides cargo.
need=()
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
command -v conntrack >/dev/null || need+=(conntrack)
command -v iptables-legacy-restore >/dev/null || need+=(iptables)
command -v sysctl >/dev/null || need+=(procps)
command -v setpriv >/dev/null || need+=(util-linux)
# tests/it/units.rs verifies the systemd units offline.
command -v systemd-analyze >/dev/null || need+=(systemd)
# tests/it/conventions.rs: the completion scripts in their shells, the man pages through groff,
# mandoc's linter and man; scripts/test-package.sh: dpkg-deb.
command -v zsh >/dev/null || need+=(zsh)
command -v fish >/dev/null || need+=(fish)
command -v mandoc >/dev/null || need+=(mandoc)
command -v groff >/dev/null || need+=(groff-base)
command -v man >/dev/null || need+=(man-db)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v readelf >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages: ${need[*]} (run this script as root to install them)" >&2
        exit 1
    fi
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The Debian package is built with cargo-deb (about 2 minutes to build once on a fresh machine).
command -v cargo-deb >/dev/null || cargo install --locked --quiet cargo-deb --version 3.8.0

# tests/it/fleet.rs runs examples/ansible/ with ansible-playbook. ansible-core alone, without the
# recommended `ansible` collections bundle: about 16 s with the packages cached (8 packages)
# against 80 s for the bundle (44 packages); the playbook uses ansible.builtin modules only.
if ! command -v ansible-playbook >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing package: ansible-core (run this script as root to install it)" >&2
        exit 1
    fi
    echo "installing: ansible-core"
    [ ${#need[@]} -gt 0 ] || apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ansible-core >/dev/null
fi

if [ "$(id -u)" -ne 0 ] && [ "${PORTMAP_TEST_ALLOW_SKIP:-}" != 1 ]; then
    echo "the test suite needs root (it builds network namespaces); run: sudo $0" >&2
    exit 1
fi

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
set -x
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
# portmap's run-time records (locks, confirmations, apply outcomes) go to a directory of this run,
# not the host's /run/portmap: the benchmarks and tests leave nothing behind there.
run_dir=$(mktemp -d /tmp/portmap-test-run.XXXXXX)
trap 'rm -rf "$run_dir"' EXIT
export PORTMAP_RUN_DIR=$run_dir PORTMAP_STATE_DIR=$run_dir
# The benchmark suite at small N, so it cannot rot (ratios are printed, not asserted).
./scripts/bench.sh --quick
# The Debian package, from the release build the benchmarks just made, and its contents.
./scripts/test-package.sh
cargo test --workspace --locked
