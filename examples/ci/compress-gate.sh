#!/usr/bin/env bash
# Compress an exported ONNX artifact and fail the job when a gate fails.
#
#   examples/ci/compress-gate.sh MODEL.onnx CALIB.npz [OUT_DIR]
#
# Exit codes (those of `onnx-amc compress`): 0 all gates passed, 1 a gate failed (the model
# and the report are still written, the report says FAIL), 2 bad input or usage.
# Tune the budget and the gates with the environment variables below.
set -euo pipefail

MODEL=${1:?usage: $0 MODEL.onnx CALIB.npz [OUT_DIR]}
CALIB=${2:?usage: $0 MODEL.onnx CALIB.npz [OUT_DIR]}
OUT_DIR=${3:-onnx-amc-out}

FLOPS=${FLOPS:-0.5}                          # fraction of MACs to keep
EPISODES=${EPISODES:-150}                    # search length (CPU minutes scale with it)
MAX_ACCURACY_DROP=${MAX_ACCURACY_DROP:-0.01} # absolute, on held-out calibration data
MIN_SPEEDUP=${MIN_SPEEDUP:-1.2}              # measured on this runner, batch 1
MAX_SIZE_MB=${MAX_SIZE_MB:-50}
ONNX_AMC=${ONNX_AMC:-onnx-amc}

mkdir -p "$OUT_DIR"
status=0
"$ONNX_AMC" compress "$MODEL" -o "$OUT_DIR/model.onnx" --calib "$CALIB" \
  --flops "$FLOPS" --episodes "$EPISODES" --reconstruct --no-progress \
  --max-accuracy-drop "$MAX_ACCURACY_DROP" --min-speedup "$MIN_SPEEDUP" \
  --max-size "$MAX_SIZE_MB" --report "$OUT_DIR/report" || status=$?

if [ -f "$OUT_DIR/report/report.md" ]; then
  # GitHub Actions shows this on the run's summary page; elsewhere it is just a file.
  if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then cat "$OUT_DIR/report/report.md" >> "$GITHUB_STEP_SUMMARY"; fi
fi
case $status in
  0) echo "onnx-amc: all gates passed" ;;
  1) echo "onnx-amc: a gate failed (see above and $OUT_DIR/report/report.md)" >&2 ;;
  *) echo "onnx-amc: bad input or error (exit $status)" >&2 ;;
esac
exit $status
