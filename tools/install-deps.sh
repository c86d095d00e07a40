#!/usr/bin/env bash
# Installs what osstune needs to build and test on Debian/Ubuntu (run as root, or with sudo available).
# Used by the quickstart and by CI, so both get the same set.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
# iproute2: the multi-node launch tests make network namespaces with `ip` (tests/launch/).
PKGS="build-essential cmake pkg-config libjansson-dev libpcre2-dev libhdf5-dev hdf5-tools
      libprotobuf-c-dev protobuf-c-compiler libopenmpi-dev openmpi-bin python3 python3-pip curl iproute2"
missing=""
for p in $PKGS; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "osstune: installing Debian packages:$missing"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
# Python packages the tests use to read what osstune writes (h5py, safetensors, gguf, sacrebleu).
if [ "${OT_SKIP_PIP:-0}" != 1 ]; then
  python3 -m pip install -q --disable-pip-version-check -r "$(dirname "$0")/../tests/requirements.txt" 2>&1 \
    | grep -v -i "running pip as the 'root' user" || true
fi
