#!/usr/bin/env bash
# Side-by-side CPU timings, e2enc vs PyTorch eager, in one session on one machine:
#  1. training throughput of the MNI demo network (width 8, max 64, four (2,2,2) pools, 3 classes,
#     density 0.2), batch 2, patch 48x64x48: one full SGD step (forward all heads, DS Dice+CE,
#     backward, clipping, Nesterov step, masks re-applied), median after a warm-up step;
#  2. inference of the AMOS-CT network (random weights) on 1x1x128^3: `e2enc bench` of bundles
#     compiled dense and at density 0.2, and PyTorch's dense eager forward (logits only,
#     no_grad; median of 3 after a warm-up; peak RSS).
# Usage: PYTHON=/tmp/torchenv/bin/python tools/torch_ref/bench.sh   (STEPS, RUNS, THREADS, WORK)
set -euo pipefail
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-10}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
WORK=${WORK:-/tmp/e2enc_torch_bench}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
E2ENC=$ROOT/target/release/e2enc
EXAMPLE=$ROOT/target/release/examples/train_step_dump
load() { echo "[load average: $(cut -d' ' -f1-3 /proc/loadavg)]"; }

(cd "$ROOT" && cargo build --release -q && cargo build --release -q -p e2enc-train --example train_step_dump)
mkdir -p "$WORK"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u)"
"$PYTHON" -c "import torch; print('torch', torch.__version__)"

echo "== 1. training step, MNI demo network, batch 2, 48x64x48, density 0.2, $THREADS threads"
(cd "$HERE" && "$PYTHON" -c "
import check_train_step as c
c.prepare('mni', c.CASES['mni'], '$WORK', '$EXAMPLE', False)")
load
"$EXAMPLE" bench "$WORK/mni/model.json" "$WORK/mni/data.safetensors" --steps "$STEPS" --threads "$THREADS" | tail -1
load
"$PYTHON" "$HERE/bench.py" train "$WORK/mni/model.json" "$WORK/mni/data.safetensors" --steps "$STEPS" --threads "$THREADS" | tail -1
load

echo "== 2. inference, AMOS-CT network, 1x1x128^3, $THREADS threads"
"$E2ENC" init -o "$WORK/amos-dense" --preset amos-ct --seed 0 --force >/dev/null
"$E2ENC" init -o "$WORK/amos-d02" --preset amos-ct --density 0.2 --seed 0 --force >/dev/null
for m in amos-d02 amos-dense; do
  "$E2ENC" compile "$WORK/$m/model.json" -o "$WORK/$m-bundle" --force >/dev/null
  load
  echo "-- e2enc bench $m"
  "$E2ENC" bench "$WORK/$m-bundle" --runs "$RUNS" --threads "$THREADS"
done
load
"$PYTHON" "$HERE/bench.py" infer "$WORK/amos-dense/model.json" --runs "$RUNS" --threads "$THREADS" | tail -1
load
