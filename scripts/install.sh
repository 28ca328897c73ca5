#!/usr/bin/env bash
# Installs portmap on this machine (or into a staging directory): the binary, the systemd units,
# the operations guide, and an example configuration at /etc/portmap/portmap.yaml if there is none
# (an existing one is never touched). It enables nothing; it prints the commands that do.
#
#   scripts/install.sh [--prefix DIR] [--destdir DIR] [--binary PATH]
#
#   --prefix DIR    where the files go (default /usr/local): DIR/sbin/portmap,
#                   DIR/lib/systemd/system/portmap{,-watch}.service, DIR/share/doc/portmap/
#   --destdir DIR   stage everything under DIR (for packaging); nothing outside it is touched
#   --binary PATH   install this binary instead of building one (cargo build --release --locked)
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
destdir=
binary=

usage() {
    sed -n '2,12s/^# \{0,1\}//p' "$0"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
        --destdir=*) destdir=${1#*=}; shift ;;
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        --binary=*) binary=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument: $1 (see --help)" >&2; exit 1 ;;
    esac
done

case "$prefix" in
    /*) ;;
    *) echo "install.sh: --prefix must be an absolute path, not: $prefix" >&2; exit 1 ;;
esac
# The prefix ends up in unit files (ExecStart=) and in sed expressions: keep it to plain path
# characters.
if ! [[ "$prefix" =~ ^[A-Za-z0-9/._-]+$ ]]; then
    echo "install.sh: --prefix may only contain A-Z a-z 0-9 / . _ -: $prefix" >&2
    exit 1
fi
prefix=${prefix%/}

if [ -z "$binary" ]; then
    cargo build --release --locked --bin portmap
    binary="${CARGO_TARGET_DIR:-target}/release/portmap"
fi
if [ ! -x "$binary" ]; then
    echo "install.sh: $binary is not an executable file" >&2
    exit 1
fi

sbindir="$prefix/sbin"
unitdir="$prefix/lib/systemd/system"
docdir="$prefix/share/doc/portmap"

install -D -m 0755 "$binary" "$destdir$sbindir/portmap"
install -d -m 0755 "$destdir$unitdir" "$destdir$docdir"
for unit in portmap.service portmap-watch.service; do
    # The units name /usr/local; point them at the prefix actually used.
    sed -e "s#/usr/local/sbin/portmap#$sbindir/portmap#g" \
        -e "s#/usr/local/share/doc/portmap#$docdir#g" \
        "dist/systemd/$unit" > "$destdir$unitdir/$unit.tmp"
    chmod 0644 "$destdir$unitdir/$unit.tmp"
    mv "$destdir$unitdir/$unit.tmp" "$destdir$unitdir/$unit"
done
install -m 0644 docs/operations.md docs/configuration.md "$destdir$docdir/"

config="$destdir/etc/portmap/portmap.yaml"
if [ -e "$config" ]; then
    echo "kept the existing $config"
else
    install -D -m 0640 dist/portmap.yaml "$config"
    echo "installed an example configuration at $config (it forwards nothing yet)"
fi

echo "installed $sbindir/portmap and $unitdir/portmap{,-watch}.service${destdir:+ under $destdir}"
if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
cat <<EOF

Next: edit /etc/portmap/portmap.yaml, check it with \`portmap validate\` and \`portmap plan\`, then
enable ONE of the units:

  systemctl enable --now portmap-watch.service   # applies at boot and repairs drift (recommended)
  systemctl enable --now portmap.service         # applies once at boot (and on reload)
EOF
