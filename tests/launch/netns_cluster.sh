# shellcheck shell=bash
# Two "nodes" on one machine, for the multi-node launch tests: sourced, not run.
#
#   netns_cluster_up DIR   node1 (10.77.0.1) and node2 (10.77.0.2): two network namespaces joined by a veth pair
#                          (each end is the node's eth0); DIR/hosts names them, DIR/nodes maps them to their
#                          namespaces; exports OSSTUNE_NETNS_CLUSTER=DIR. On failure: false, the reason in
#                          NETNS_ERROR (no root, no CAP_NET_ADMIN, no iproute2, no util-linux unshare).
#   on_node NODE CMD...    runs CMD on NODE through netns_ssh.sh (ssh semantics: one shell command line)
#   node_exec NODE CMD...  runs CMD (argv as given, this environment) in NODE's network namespace only
#   node_pids NODE [NAME]  the processes on NODE (those named NAME only)
#   eth0_bytes NODE        bytes NODE's eth0 has sent and received
#   netns_kill_all         kills every process on the nodes (what the test started there)
#   netns_cluster_down     netns_kill_all, then removes the namespaces (safe to call twice)
#
# The namespaces are named after this shell's pid, so concurrent tests do not collide; the addresses are private
# to the namespaces. Nothing is written outside DIR: netns_ssh.sh bind-mounts DIR/hosts over /etc/hosts in a
# private mount namespace of each command it starts.
NETNS_SSH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/netns_ssh.sh
NETNS_NAMES=()
NETNS_ERROR=""

netns_cluster_up() {
  local dir=$1 prefix=osstune-$$ out
  NETNS_ERROR=""
  if [ "$(id -u)" != 0 ]; then NETNS_ERROR="needs root (network namespaces need CAP_NET_ADMIN)"; return 1; fi
  if ! command -v ip >/dev/null; then NETNS_ERROR="no 'ip' command (iproute2 is not installed)"; return 1; fi
  if ! command -v unshare >/dev/null || ! command -v nsenter >/dev/null; then
    NETNS_ERROR="no 'unshare' or 'nsenter' command (util-linux)"
    return 1
  fi
  mkdir -p "$dir" || return 1
  if ! out=$(ip netns add "$prefix-node1" 2>&1); then
    NETNS_ERROR="cannot create a network namespace: $out"
    return 1
  fi
  NETNS_NAMES+=("$prefix-node1")
  if ! out=$(ip netns add "$prefix-node2" 2>&1); then
    NETNS_ERROR="cannot create a second network namespace: $out"
    return 1
  fi
  NETNS_NAMES+=("$prefix-node2")
  if ! out=$( { ip link add eth0 netns "$prefix-node1" type veth peer name eth0 netns "$prefix-node2" &&
                ip -n "$prefix-node1" addr add 10.77.0.1/24 dev eth0 &&
                ip -n "$prefix-node2" addr add 10.77.0.2/24 dev eth0 &&
                ip -n "$prefix-node1" link set eth0 up && ip -n "$prefix-node2" link set eth0 up &&
                ip -n "$prefix-node1" link set lo up && ip -n "$prefix-node2" link set lo up; } 2>&1); then
    NETNS_ERROR="cannot connect the namespaces with a veth pair: $out"
    return 1
  fi
  printf '127.0.0.1 localhost\n10.77.0.1 node1\n10.77.0.2 node2\n' >"$dir/hosts"
  printf 'node1 %s\nnode2 %s\n' "$prefix-node1" "$prefix-node2" >"$dir/nodes"
  export OSSTUNE_NETNS_CLUSTER=$dir
  # netns_ssh.sh must be able to enter a node (mount, UTS namespace), and the nodes must reach each other by name.
  if ! out=$(on_node node1 'getent hosts node2 && hostname' 2>&1) || [ "$(echo "$out" | tail -1)" != node1 ]; then
    NETNS_ERROR="cannot start a command on a node: $(echo "$out" | tail -2 | tr '\n' ' ')"
    return 1
  fi
  if ! out=$(on_node node2 "bash -c 'echo >/dev/tcp/node1/1' 2>&1 || true" 2>&1) || ! echo "$out" | grep -q refused; then
    NETNS_ERROR="node2 cannot reach node1 over the veth pair: $out"
    return 1
  fi
}

on_node() { "$NETNS_SSH" "$@"; }

node_exec() { # node_exec NODE CMD ARGS...: CMD in NODE's network only (this machine's host name and files)
  local ns
  ns=$(awk -v h="$1" '$1 == h { print $2 }' "$OSSTUNE_NETNS_CLUSTER/nodes")
  shift
  ip netns exec "$ns" "$@"
}

node_pids() { # node_pids NODE [NAME]
  local ns p
  ns=$(awk -v h="$1" '$1 == h { print $2 }' "$OSSTUNE_NETNS_CLUSTER/nodes")
  for p in $(ip netns pids "$ns" 2>/dev/null); do
    if [ -z "${2:-}" ] || [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ]; then echo "$p"; fi
  done
}

eth0_bytes() {
  local ns
  ns=$(awk -v h="$1" '$1 == h { print $2 }' "$OSSTUNE_NETNS_CLUSTER/nodes")
  local rx tx
  { read -r rx; read -r tx; } < <(ip netns exec "$ns" cat /sys/class/net/eth0/statistics/rx_bytes \
                                                     /sys/class/net/eth0/statistics/tx_bytes)
  echo $((rx + tx))
}

netns_kill_all() { # every process on the nodes: only what the test started there
  local ns p
  for ns in "${NETNS_NAMES[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  done
}

netns_cluster_down() {
  local ns
  netns_kill_all
  for ns in "${NETNS_NAMES[@]}"; do
    for _ in $(seq 50); do [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break; sleep 0.1; done
    ip netns del "$ns" 2>/dev/null
  done
  NETNS_NAMES=()
}
