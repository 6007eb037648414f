#!/usr/bin/env bash
# Pre-deployment step: optimise a model for the target within budgets, or fail the pipeline.
#
#   examples/pipeline/optimize.sh MODEL.onnx [TARGET] [MAX_MEMORY] [MAX_DEVIATION]
#
# Exit codes (from hwopt optimize): 0 model written within the budgets; 1 no variant
# meets them (the reason is on stderr); 2 bad input. Artifacts land in ./hwopt-out/.
set -euo pipefail

MODEL=${1:?usage: optimize.sh MODEL.onnx [TARGET] [MAX_MEMORY] [MAX_DEVIATION]}
TARGET=${2:-npu32}
MAX_MEMORY=${3:-4MiB}
MAX_DEVIATION=${4:-}
OUT=${HWOPT_OUT:-hwopt-out}
NAME=$(basename "$MODEL" .onnx)
mkdir -p "$OUT"

args=(optimize "$MODEL" --target "$TARGET" --max-memory "$MAX_MEMORY" --seed 0
      -o "$OUT/$NAME.$TARGET.onnx" --save-rules "$OUT/$NAME.$TARGET.rules.toml"
      --report "$OUT/$NAME.$TARGET.md" --json --quiet)
if [[ -n "$MAX_DEVIATION" ]]; then
    args+=(--max-deviation "$MAX_DEVIATION")
fi

set +e
hwopt "${args[@]}" > "$OUT/$NAME.$TARGET.json"
status=$?
set -e
case $status in
    0) echo "hwopt: $OUT/$NAME.$TARGET.onnx written ($(python -c "import json,sys; d=json.load(open(sys.argv[1])); b=d['best']; f=d['fidelity']; print(f\"{b['latency_change']:+.1%} estimated latency, {f['label']} {b['fidelity']:.1%} on {f['samples']['held_out']} held-out samples, rel L2 {b['rel_l2']:.3g}\")" "$OUT/$NAME.$TARGET.json"))" ;;
    1) echo "hwopt: no variant of $MODEL fits the budgets for $TARGET (see above); blocking the deployment" >&2 ;;
    *) echo "hwopt: failed on $MODEL (exit $status)" >&2 ;;
esac
exit $status
