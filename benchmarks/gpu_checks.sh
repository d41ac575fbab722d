#!/usr/bin/env bash
# The GPU checks in one run, for a CUDA machine with torch and triton (vtk, nibabel and monai not
# needed): rasterizer and loss tests on the Triton backend, the rasterizer benchmark, the phantom
# reconstruction on cuda (fast and auto presets), and -- given a folder of real sweeps -- `sweep
# compare` with the defaults on them, twice each (the second run finds Triton's kernels compiled).
#
#     bash benchmarks/gpu_checks.sh [REAL_DIR] [LOG_DIR]
#
# Logs (one per step) go to LOG_DIR; compare's result folders to /tmp/gpu_checks_out.
# REAL_DIR holds SpinePhantomFreehand.igs.mha with its PLUS XML, and un_l2/ (the ultranerf l2 frames
# with poses.npy converted to image-to-world, as docs/sweep.md shows). Each step has its own time
# limit; the script goes on after a failed step and exits non-zero if any failed.
set -uo pipefail
PY=${PYTHON:-python3}
REAL=${1:-}
LOGS=${2:-/tmp/gpu_checks}
mkdir -p "$LOGS"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
failed=0
step() {  # step NAME SECONDS COMMAND...: run, log to LOGS/NAME.log, print its tail and time
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1 || { echo "FAILED ($?): $name"; failed=1; }
  tail -n 12 "$LOGS/$name.log"; echo "=== $name: $((SECONDS - t0)) s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())"
step tests 200 $PY -m pytest -q -p no:cacheprovider -o addopts= --timeout 150 tests/test_raster.py tests/test_loss.py
step bench_raster 120 $PY benchmarks/bench_raster.py --backends triton --sizes 12000 50000 --skip-reference-50k --reps 20
step recon_fast 90 $PY benchmarks/bench_reconstruct.py --device cuda --skip-compare
step recon_auto 90 $PY benchmarks/bench_reconstruct.py --device cuda --skip-compare --preset auto
if [ -n "$REAL" ]; then
  for k in 1 2; do
    step "spine_$k" 150 $PY -m sono3d.cli sweep compare "$REAL/SpinePhantomFreehand.igs.mha" "/tmp/gpu_checks_out/spine_$k" \
      --plus-config "$REAL/PlusDeviceSet_SpinePhantomFreehandReconstructionOnly.xml" --device cuda --no-html --quiet
    step "l2_$k" 150 $PY -m sono3d.cli sweep compare "$REAL/un_l2" "/tmp/gpu_checks_out/l2_$k" --device cuda --no-html --quiet
  done
fi
exit $failed
