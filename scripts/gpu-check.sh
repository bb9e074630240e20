#!/usr/bin/env bash
# The GPU check: run the CUDA bundles prepared on a build machine on a lent GPU machine, compare
# every output with the CPU's, run compute-sanitizer (memcheck, racecheck) on the small bundle and
# time `e2enc bench --device cuda`. UNVERIFIED UNTIL A GPU RUN: written on a machine without a
# GPU and checked there with bash -n and ShellCheck only; its first GPU run is its first test.
#
#   scripts/gpu-check.sh --prepare [DIR]   on the build machine (cargo, no GPU needed): builds
#                                          target/release/e2enc with --features cuda, and compiles
#                                          the cases into DIR (default gpu-bundles/)
#   scripts/gpu-check.sh [DIR]             on the GPU machine: runs the checks (about 5 minutes)
#
# The GPU machine (H200, driver 580 / CUDA 13.0, compute-sanitizer, no package registry) builds
# nothing: the binary and the bundles come from the build machine. DIR/ is untracked (not
# git-ignored), so it travels with the working tree; the binary is the first of $E2ENC_BIN,
# target/release/e2enc, DIR/bin/e2enc (a stripped copy --prepare leaves there), else it is built
# with `cargo build --release --features cuda` where cargo exists.
#
# Layout of DIR (written by --prepare):
#   trusted_keys               the public key the bundles are signed with (--trusted-keys)
#   bin/e2enc                  stripped release binary built with --features cuda
#   CASE/cuda/                 a CUDA bundle (e2enc compile --target cuda-sm90)
#   CASE/input.safetensors     its input (tensor `input`)
#   CASE/reference.safetensors the outputs of the CPU bundle of the same model on that input
#   CASE/tolerance             optional: largest relative error accepted (default 1e-4)
#   CASE/small                 marks a case compute-sanitizer runs (default: the first case)
#   CASE/build-on-gpu          marks a bundle whose kernels.cubin / kernels.ptx are built here
#                              from its kernels.cu with nvcc (their checksums then written into
#                              its unsigned manifest): the runtime's smoke case `smoke`, two
#                              hand-written kernels with a known answer (runtime/tests/fake_cuda),
#                              which checks the CUDA device even before e2enc generates CUDA code
#
# Results go to $OUT (else ./gpu-check-out): results.json (one entry per part: case, part,
# status ok/fail/skipped, seconds, detail), summary.txt, and every command's log. Each part is
# written as soon as it ends (results.jsonl), so a part that fails or a run cut short still
# leaves the parts before it. Exit status: 0 when every part passed, 1 otherwise.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)

PREPARE=0
if [[ ${1:-} == --prepare ]]; then
    PREPARE=1
    shift
fi
DIR=${1:-gpu-bundles}
DIR=${DIR%/}

# ---------------------------------------------------------------------------------------------
# --prepare: on the build machine.
# ---------------------------------------------------------------------------------------------

# Writes a safetensors file holding `input` [1, C, D, H, W] of deterministic values in [-1, 1).
write_input() {
    python3 - "$@" <<'EOF'
import json, struct, sys
from array import array
path, c, d, h, w = sys.argv[1], *map(int, sys.argv[2:6])
n = c * d * h * w
state = 0x2545F4914F6CDD1D
vals = array("f")
for _ in range(n):
    state ^= (state << 13) & 0xFFFFFFFFFFFFFFFF
    state ^= state >> 7
    state ^= (state << 17) & 0xFFFFFFFFFFFFFFFF
    vals.append((state >> 40) / float(1 << 24) * 2.0 - 1.0)
data = vals.tobytes()
header = json.dumps({"input": {"dtype": "F32", "shape": [1, c, d, h, w], "data_offsets": [0, len(data)]}})
header += " " * (-len(header) % 8)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header.encode() + data)
EOF
}

# prepare_case NAME MODEL_JSON INPUT_FILE [compile args...]: the CUDA bundle, the input and the
# CPU reference of one case.
prepare_case() {
    local name=$1 model=$2 input=$3
    shift 3
    local case_dir=$DIR/$name
    echo "== case $name ($model)"
    rm -rf "$case_dir"
    mkdir -p "$case_dir"
    cp "$input" "$case_dir/input.safetensors"
    if ! "$BIN" compile "$model" -o "$case_dir/cuda" --target cuda-sm90 --sign "$KEY" "$@"; then
        echo "   the CUDA compile failed: case $name left out"
        rm -rf "$case_dir"
        return 1
    fi
    if [[ ! -s $case_dir/cuda/kernels.cubin ]]; then
        echo "   $case_dir/cuda has no kernels.cubin: this e2enc does not generate CUDA kernels" \
            "yet; case $name left out"
        rm -rf "$case_dir"
        return 1
    fi
    local cpu=$WORK/$name-cpu
    rm -rf "$cpu"
    if ! "$BIN" compile "$model" -o "$cpu" --target native "$@" ||
        ! "$BIN" run "$cpu" --input "$case_dir/input.safetensors" \
            --output "$case_dir/reference.safetensors" --overwrite; then
        echo "   the CPU reference failed: case $name left out"
        rm -rf "$case_dir"
        return 1
    fi
}

prepare() {
    command -v cargo >/dev/null || {
        echo "--prepare needs cargo" >&2
        exit 1
    }
    cargo build --release --features cuda --bin e2enc || exit 1
    BIN=$ROOT/target/release/e2enc
    WORK=$ROOT/target/gpu-check-work
    mkdir -p "$DIR/bin" "$WORK"
    strip -o "$DIR/bin/e2enc" "$BIN" 2>/dev/null || cp "$BIN" "$DIR/bin/e2enc"
    # A key of its own, kept on the build machine; the GPU machine trusts its public half.
    KEY=$WORK/sign.key
    [[ -f $KEY ]] || "$BIN" keygen -o "$KEY" --comment gpu-check || exit 1
    cp "$KEY.pub" "$DIR/trusted_keys"

    # smoke: the runtime's hand-written CUDA bundle (built on the GPU machine by nvcc).
    local abs
    abs=$(cd "$DIR" && pwd)
    E2ENC_GPU_SMOKE_DIR=$abs/smoke cargo test -p e2enc-runtime --test cuda the_gpu_smoke_case ||
        echo "   the smoke case failed"
    # golden: the authors' released network (small; a sanitizer case).
    if prepare_case golden tests/data/golden/model.json tests/data/golden/io.safetensors; then
        touch "$DIR/golden/small"
    fi
    # amos-ct: the AMOS-CT network at DSFF density 0.2, 128^3 (the benchmark case).
    rm -rf "$WORK/amos"
    if "$BIN" init -o "$WORK/amos" --preset amos-ct --density 0.2 &&
        write_input "$WORK/amos-input.safetensors" 1 128 128 128; then
        prepare_case amos-ct "$WORK/amos/model.json" "$WORK/amos-input.safetensors"
    fi
    echo "prepared $DIR:"
    du -sh "$DIR"/* 2>/dev/null
}

if ((PREPARE)); then
    prepare
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# The check: on the GPU machine.
# ---------------------------------------------------------------------------------------------

OUT=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT"
JSONL=$OUT/results.jsonl
SUMMARY=$OUT/summary.txt
: >"$JSONL"
: >"$SUMMARY"
BUDGET=${GPU_CHECK_SECONDS:-290}
START=$SECONDS
FAILED=0

json_str() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\t'/ }
    s=${s//$'\r'/}
    printf '"%s"' "$s"
}

# record CASE PART STATUS SECONDS DETAIL: one result, written at once.
record() {
    printf '{"case": %s, "part": %s, "status": %s, "seconds": %s, "detail": %s}\n' \
        "$(json_str "$1")" "$(json_str "$2")" "$(json_str "$3")" "$4" "$(json_str "$5")" >>"$JSONL"
    printf '%-8s %-10s %-22s %6ss  %s\n' "$3" "$1" "$2" "$4" "${5%%$'\n'*}" | tee -a "$SUMMARY"
    [[ $3 == fail ]] && FAILED=1
    return 0
}

# shellcheck disable=SC2317  # run by the EXIT trap
finish() {
    {
        echo "["
        sed '$!s/$/,/' "$JSONL"
        echo "]"
    } >"$OUT/results.json"
    echo "total $((SECONDS - START)) s; results in $OUT (results.json, summary.txt, *.log)" |
        tee -a "$SUMMARY"
}
trap finish EXIT

# run_part CASE PART TIMEOUT LOG CMD...: runs CMD with a time limit (less when the budget is
# nearly spent), logs its output; sets RC and ELAPSED. Returns 1 (RC=-1) when skipped for time.
run_part() {
    local case=$1 part=$2 limit=$3 log=$4
    shift 4
    local left=$((BUDGET - (SECONDS - START)))
    if ((left < 15)); then
        record "$case" "$part" skipped 0 "the time budget (${BUDGET} s) is spent"
        RC=-1
        return 1
    fi
    ((limit > left)) && limit=$left
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
    RC=$?
    ELAPSED=$((SECONDS - t0))
    ((RC == 124 || RC == 137)) && echo "TIMED OUT after $limit s" >>"$log"
    return 0
}

# The last lines of a log, for the summary.
tail_of() {
    tail -n "${2:-3}" "$1" 2>/dev/null | tr -s ' '
}

# The binary.
BIN=${E2ENC_BIN:-}
for b in "$ROOT/target/release/e2enc" "$DIR/bin/e2enc"; do
    [[ -z $BIN && -x $b ]] && BIN=$b
done
if [[ -z $BIN ]] && command -v cargo >/dev/null; then
    cargo build --release --features cuda --bin e2enc >"$OUT/build.log" 2>&1 &&
        BIN=$ROOT/target/release/e2enc
fi
if [[ -z $BIN ]]; then
    record - binary fail 0 "no e2enc binary (set E2ENC_BIN, or run --prepare on a build machine)"
    exit 1
fi
record - binary ok 0 "$BIN"

# The machine.
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,compute_cap \
        --format=csv 2>&1
    nvidia-smi 2>&1 | head -n 15
    command -v compute-sanitizer
} >"$OUT/machine.txt" 2>&1
record - machine "$( (command -v nvidia-smi >/dev/null && echo ok) || echo fail)" 0 \
    "$(sed -n 2p "$OUT/machine.txt")"

# trust_of CASE: sets TRUST, the flags that let e2enc load the case's bundle.
trust_of() {
    if [[ -f $1/build-on-gpu || ! -f $DIR/trusted_keys ]]; then
        TRUST=(--trust-unsigned)
    else
        TRUST=(--trusted-keys "$DIR/trusted_keys")
    fi
}

mapfile -t CASES < <(find "$DIR" -mindepth 2 -maxdepth 2 -name cuda -type d -printf '%h\n' | sort)
if ((${#CASES[@]} == 0)); then
    record - cases fail 0 "no CASE/cuda bundles under $DIR (run --prepare on a build machine)"
    exit 1
fi
SMALL=()
for c in "${CASES[@]}"; do
    [[ -f $c/small ]] && SMALL+=("$c")
done
((${#SMALL[@]} == 0)) && SMALL=("${CASES[0]}")

# 0. Cases whose kernels are built here (nvcc from kernels.cu, then the manifest's checksums).
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
for c in "${CASES[@]}"; do
    [[ -f $c/build-on-gpu ]] || continue
    name=$(basename "$c")
    log=$OUT/$name.nvcc.log
    sm=$(sed -n 's/.*"sm": *\([0-9]*\).*/\1/p' "$c/cuda/manifest.json" | head -n 1)
    # shellcheck disable=SC2016  # the inner script expands its own arguments
    run_part "$name" nvcc-build 120 "$log" bash -c '
        set -e
        "$1" -cubin -arch="sm_$2" -o "$3/kernels.cubin" "$3/kernels.cu"
        "$1" -ptx -arch="compute_$2" -o "$3/kernels.ptx" "$3/kernels.cu"
        python3 - "$3" <<"EOF"
import hashlib, json, sys
d = sys.argv[1]
m = json.load(open(d + "/manifest.json"))
for f in ("kernels.cubin", "kernels.ptx"):
    m["files"][f] = hashlib.sha256(open(d + "/" + f, "rb").read()).hexdigest()
json.dump(m, open(d + "/manifest.json", "w"), indent=2)
EOF' build "$NVCC" "${sm:-90}" "$c/cuda" || continue
    if ((RC == 0)); then
        record "$name" nvcc-build ok "$ELAPSED" "$NVCC sm_${sm:-90}"
    else
        record "$name" nvcc-build fail "$ELAPSED" "rc $RC: $(tail_of "$log")"
    fi
done

# 1. Every case on the GPU, compared with the CPU's outputs.
for c in "${CASES[@]}"; do
    name=$(basename "$c")
    tol=$(cat "$c/tolerance" 2>/dev/null || echo 1e-4)
    log=$OUT/$name.run.log
    trust_of "$c"
    run_part "$name" run-vs-cpu 120 "$log" "$BIN" run "$c/cuda" --device cuda \
        --input "$c/input.safetensors" --reference "$c/reference.safetensors" \
        --tolerance "$tol" --output "$OUT/$name.out.safetensors" --overwrite "${TRUST[@]}" ||
        continue
    errors=$(grep -E 'relative error|device:' "$log" | tr -s ' ' | paste -sd ';' -)
    if ((RC == 0)); then
        record "$name" run-vs-cpu ok "$ELAPSED" "$errors"
    else
        record "$name" run-vs-cpu fail "$ELAPSED" "rc $RC: $errors $(tail_of "$log")"
    fi
done

# 2. The error path: a GPU that does not exist is named, not a crash.
c=${SMALL[0]}
name=$(basename "$c")
log=$OUT/no-such-gpu.log
trust_of "$c"
if run_part "$name" no-such-gpu 30 "$log" "$BIN" bench "$c/cuda" --device cuda:7 --runs 1 \
    "${TRUST[@]}"; then
    if ((RC != 0)) && grep -q 'no CUDA device 7' "$log" && ! grep -q panicked "$log"; then
        record "$name" no-such-gpu ok "$ELAPSED" "$(tail_of "$log" 1)"
    else
        record "$name" no-such-gpu fail "$ELAPSED" "rc $RC: $(tail_of "$log")"
    fi
fi

# 3. compute-sanitizer on the small cases: memcheck, then racecheck (shared memory hazards).
SANITIZER=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
for c in "${SMALL[@]}"; do
    name=$(basename "$c")
    if [[ ! -x $SANITIZER ]]; then
        record "$name" sanitizer skipped 0 "compute-sanitizer is not on PATH"
        continue
    fi
    trust_of "$c"
    for tool in memcheck racecheck; do
        log=$OUT/$name.$tool.log
        run_part "$name" "sanitizer-$tool" 120 "$log" "$SANITIZER" --tool "$tool" \
            --error-exitcode 99 "$BIN" run "$c/cuda" --device cuda \
            --input "$c/input.safetensors" --reference "$c/reference.safetensors" \
            --tolerance "$(cat "$c/tolerance" 2>/dev/null || echo 1e-4)" "${TRUST[@]}" ||
            continue
        summary=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|hazard' "$log" | head -n 3 |
            paste -sd ';' -)
        if ((RC == 0)); then
            record "$name" "sanitizer-$tool" ok "$ELAPSED" "$summary"
        else
            record "$name" "sanitizer-$tool" fail "$ELAPSED" "rc $RC: $summary $(tail_of "$log")"
        fi
    done
done

# 4. Timing: bench every case (the largest last), with a per-kernel profile.
for c in "${CASES[@]}"; do
    name=$(basename "$c")
    log=$OUT/$name.bench.log
    trust_of "$c"
    run_part "$name" bench 90 "$log" "$BIN" bench "$c/cuda" --device cuda --runs 10 --warmup 3 \
        --profile "${TRUST[@]}" || continue
    if ((RC == 0)); then
        record "$name" bench ok "$ELAPSED" "$(grep -E '^(median|dense MACs|executed MACs)' "$log" |
            tr -s ' ' | paste -sd ';' -)"
    else
        record "$name" bench fail "$ELAPSED" "rc $RC: $(tail_of "$log")"
    fi
done

exit "$FAILED"
