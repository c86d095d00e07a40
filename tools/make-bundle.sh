#!/usr/bin/env bash
# Copies the built programs and the shared libraries they need beyond a plain CUDA + Open MPI machine (jansson,
# protobuf-c, PCRE2, HDF5 and its compressors) into one folder, to run osstune on a machine that has no -dev
# packages or no package manager. Use it with: export LD_LIBRARY_PATH=DIR/lib:$LD_LIBRARY_PATH; DIR/bin/osstune-...
#
# usage: tools/make-bundle.sh BUILD_DIR OUT_DIR
set -euo pipefail
build=${1:?usage: make-bundle.sh BUILD_DIR OUT_DIR}
out=${2:?usage: make-bundle.sh BUILD_DIR OUT_DIR}
mkdir -p "$out/bin" "$out/lib"
cp "$build"/bin/* "$out/bin/"
for exe in "$out"/bin/*; do
  ldd "$exe" 2>/dev/null | awk '/=>/ {print $3}' | grep -E 'libjansson|libprotobuf-c|libpcre2|libhdf5|libsz|libaec' || true
done | sort -u | while read -r lib; do
  [ -n "$lib" ] && cp -L "$lib" "$out/lib/"
done
echo "make-bundle: $(ls "$out/bin" | wc -l) programs, $(ls "$out/lib" | wc -l) libraries in $out"
