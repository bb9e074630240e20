#!/usr/bin/env bash
# Data-parallel communication on this machine: one process with 2 threads against
# `mpirun -n 2` with one thread per rank, alternating, same seed, global batch 2, `--profile`.
# Needs an e2enc built with `cargo build --release --features mpi` and Open MPI.
#   scripts/dp-bench.sh DATASET [e2enc train options...]
#   scripts/dp-bench.sh e2enc-demo/dataset --patch 48,64,48 --epochs 1 --iters 10 --val-iters 1
set -euo pipefail
E="${E2ENC:-$(dirname "$0")/../target/release/e2enc}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ds="$1"
shift
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for rep in 1 2; do
    echo "== $rep: one process, 2 threads; load $(cut -d' ' -f1-3 /proc/loadavg)"
    rm -rf "$out/one"
    "$E" train "$ds" -o "$out/one" --batch 2 --threads 2 --profile "$@" 2>&1 \
        | grep -a -E "^epoch|data wait|^total"
    echo "== $rep: mpirun -n 2, 1 thread each; load $(cut -d' ' -f1-3 /proc/loadavg)"
    rm -rf "$out/two"
    mpirun --oversubscribe --bind-to none -n 2 "$E" train "$ds" -o "$out/two" --batch 2 \
        --threads 1 --profile "$@" 2>&1 | grep -a -E "^epoch|all-reduce|slowest|data wait|^total|communication"
done
