#!/usr/bin/env bash
# A long fuzz session of e2enc's loaders (tests/fuzz.rs): CASES mutated inputs per target
# (default 100000) from a random seed, printed first so that a failure can be replayed, with
# corpus growth on (inputs that reach a new behaviour are added to tests/data/fuzz/<target>/).
#
#   scripts/fuzz.sh [CASES] [TARGET]      TARGET: nifti, model_json, safetensors,
#                                         bundle_manifest, bundle_sig, ir_text (default: all)
#   ROUNDS=10 scripts/fuzz.sh 20000       ten rounds, each with a new seed
#
# Environment: E2ENC_FUZZ_SEED (a fixed seed instead of a random one), E2ENC_FUZZ_GROW=0 (leave the
# corpus alone), E2ENC_FUZZ_GROW_MAX (corpus files added per target per round, default 10),
# E2ENC_FUZZ_CASE_SECS (time bound per case, default 10), THREADS (targets run at once, default 2).
# A failing input is saved under target/tmp/fuzz-failures/ and the failure message prints the
# command that replays it; keep it as tests/data/fuzz/regressions/<target>--<what>.<ext> with the
# fix.
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-100000}
filter=fuzz_${2:-}
rounds=${ROUNDS:-1}
for ((r = 1; r <= rounds; r++)); do
    seed=${E2ENC_FUZZ_SEED:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}
    echo "fuzz round $r/$rounds: seed $seed, $cases cases per target (replay: E2ENC_FUZZ_SEED=$seed E2ENC_FUZZ_CASES=$cases cargo test --test fuzz $filter)"
    E2ENC_FUZZ_SEED=$seed E2ENC_FUZZ_CASES=$cases E2ENC_FUZZ_GROW=${E2ENC_FUZZ_GROW:-1} \
        cargo test --test fuzz "$filter" -- --nocapture --test-threads="${THREADS:-2}"
done
