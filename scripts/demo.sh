#!/usr/bin/env bash
# portmap in 30 seconds, on any Linux machine with root, without touching the host's network:
# builds portmap, sets up three network namespaces — an internet client, a router and a LAN host —
# then plans and applies examples/home-router.yaml on the router and opens a real connection from the
# internet side through the port mapping. Everything it creates is deleted when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "the demo creates network namespaces and needs root: sudo $0" >&2
    exit 1
fi
need=()
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
command -v socat >/dev/null || need+=(socat)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release --quiet
portmap=$PWD/target/release/portmap
config=examples/home-router.yaml

inet=pm-demo-inet router=pm-demo-router lan=pm-demo-lan
cleanup() {
    for ns in $inet $router $lan; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT
cleanup
for ns in $inet $router $lan; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add wan0 netns $router type veth peer name eth0 netns $inet
ip link add lan0 netns $router type veth peer name eth0 netns $lan
ip -n $router addr add 203.0.113.1/24 dev wan0
ip -n $router addr add 192.168.1.1/24 dev lan0
ip -n $inet addr add 203.0.113.2/24 dev eth0
for a in 192.168.1.66 192.168.1.25 192.168.1.70; do ip -n $lan addr add $a/24 dev eth0; done
for l in "$router wan0" "$router lan0" "$inet eth0" "$lan eth0"; do set -- $l; ip -n "$1" link set "$2" up; done
ip -n $lan route add default via 192.168.1.1
ip netns exec $router sysctl -qw net.ipv4.ip_forward=1

run() { echo; echo "\$ $*"; "$@"; }
run "$portmap" --netns $router plan -c $config
run "$portmap" --netns $router apply -c $config --auto-approve
run "$portmap" --netns $router plan -c $config --detailed-exitcode
run "$portmap" --netns $router status

# A web server on the LAN host, and a client on the internet side connecting to the router's WAN
# address: the mapping "web" (8080 -> 192.168.1.66:80) carries it.
ip netns exec $lan socat -T2 TCP-LISTEN:80,bind=192.168.1.66,reuseaddr,fork \
    SYSTEM:'echo "hello from 192.168.1.66:80, you are $SOCAT_PEERADDR"' &
server=$!
for _ in $(seq 50); do ip netns exec $lan ss -ltn 'sport = :80' | grep -q LISTEN && break; sleep 0.05; done
echo
echo "\$ (internet 203.0.113.2) connect to 203.0.113.1:8080"
ip netns exec $inet socat -T2 - TCP:203.0.113.1:8080,connect-timeout=2 </dev/null
kill $server 2>/dev/null || true

run "$portmap" --netns $router destroy --auto-approve
echo
echo "demo finished; namespaces removed"
