#!/usr/bin/env bash
# Stands in for ssh between the "nodes" of tests/launch/netns_cluster.sh: each node is a network namespace of this
# machine with its own address, host name (a UTS namespace) and /etc/hosts.
#
#   netns_ssh.sh HOST COMMAND...
#
# runs COMMAND on HOST the way `ssh HOST COMMAND...` would: the words are joined with spaces and run by a shell
# there, in a fresh login-like environment (PATH, HOME and OSSTUNE_NETNS_CLUSTER only), and the exit status is the
# command's. Open MPI's mpirun uses it in place of ssh (`--mca plm_rsh_agent netns_ssh.sh`) to start its daemon on
# the other node. OSSTUNE_NETNS_CLUSTER names the cluster's directory: its `nodes` file maps host names to
# namespaces ("node2 ns-name" lines), its `hosts` file becomes /etc/hosts on every node.
set -euo pipefail
if [ $# -lt 2 ] || [ -z "${OSSTUNE_NETNS_CLUSTER:-}" ]; then
  echo "usage: OSSTUNE_NETNS_CLUSTER=DIR netns_ssh.sh HOST COMMAND..." >&2
  exit 255 # ssh's status for "could not connect"
fi
host=$1
shift
cluster=$OSSTUNE_NETNS_CLUSTER
ns=$(awk -v h="$host" '$1 == h { print $2 }' "$cluster/nodes")
if [ -z "$ns" ]; then
  echo "netns_ssh.sh: no node named '$host' in $cluster/nodes" >&2
  exit 255
fi
# The node's network namespace (nsenter rather than `ip netns exec`, which mounts a new /sys and so hides
# /sys/fs/cgroup, which slurmd needs), a private mount namespace for the node's /etc/hosts, a private UTS namespace
# for its host name; then the command line through a shell, as sshd runs it. The hosts file and the host name are
# passed as arguments, never spliced into the script text.
# shellcheck disable=SC2016
exec nsenter --net="/run/netns/$ns" -- unshare --uts --mount --propagation private -- \
  env -i PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" HOME="${HOME:-/root}" \
  OSSTUNE_NETNS_CLUSTER="$cluster" \
  sh -c 'mount --bind "$1" /etc/hosts && hostname "$2" && exec sh -c "$3"' node-login "$cluster/hosts" "$host" "$*"
