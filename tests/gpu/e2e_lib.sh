# What the end-to-end scripts of tests/gpu share, sourced with the script's arguments:
#   . "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh" "$@"
# checks the usage (BIN_DIR WORK_DIR, and at most E2E_MORE_ARGS more: "[REDUCE]"), sets bin, work (made, absolute)
# and root (the repository), lets Open MPI run as root, and gives the tiny model with the real vocabulary and the
# bundled sample pairs they train on.
[ $# -ge 2 ] && { [ $# -eq 2 ] || [ -n "${E2E_MORE_ARGS:-}" ]; } ||
    { echo "usage: $0 BIN_DIR WORK_DIR ${E2E_MORE_ARGS:-}" >&2; exit 2; }
bin=$(cd "$1" && pwd)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$2"
work=$(cd "$2" && pwd)

# e2e_real_vocab_model DIR: the tiny preset with head_dim 64 (the CUDA attention's head size) and o200k's vocabulary
e2e_real_vocab_model() {
    [ -f "$1/config.json" ] || "$bin/osstune-init-model" --preset tiny --seed 1 --set head_dim=64 --out "$1" > /dev/null
}
# e2e_sample_pairs OUT.h5: data/sample/train.tsv tokenized, both directions
e2e_sample_pairs() {
    [ -f "$1" ] || "$bin/osstune-prep" --tokenizer "$root/data/o200k_base.tiktoken" --in "$root/data/sample/train.tsv" --out "$1" \
        --quiet
}
