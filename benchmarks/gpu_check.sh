#!/usr/bin/env bash
# One prepared run for a lent GPU machine (the `device` tool): the CUDA tests, then the benchmarks on CUDA, inside
# 8 minutes; logs and RESULTS.md into $OUT (else benchmarks/out/gpu). It installs nothing from the network (the
# device machine has none): it needs a Python with a CUDA torch, and installs this project into it with --no-deps
# from the working tree. Usage on the device: `bash benchmarks/gpu_check.sh` (timeout_s 540 leaves time to rerun).
# Not yet run on a GPU: no device was lent to the sessions that wrote it (see the closing notes of issue 16).
set -uo pipefail
OUT=${OUT:-benchmarks/out/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 ERASURE_PROGRESS=never
start=$(date +%s)
left() { echo $(( 480 - ($(date +%s) - start) )); }

"$PY" -c "import torch, sys; ok = torch.cuda.is_available(); print('torch', torch.__version__, 'cuda', ok,
torch.cuda.get_device_name(0) if ok else ''); sys.exit(0 if ok else 3)" 2>&1 | tee "$OUT/env.txt" || {
  echo "no CUDA torch in $PY: nothing to check" | tee -a "$OUT/env.txt"; exit 3; }
"$PY" -m pip install -q --no-deps --no-build-isolation -e . >>"$OUT/env.txt" 2>&1 || true

# 1. CUDA tests: every test that asks for CUDA (they skip without it on CPU machines and in CI).
timeout $(( $(left) / 2 )) "$PY" -m pytest -q -rs -k "cuda or device or gpu" tests 2>&1 | tee "$OUT/cuda_tests.log"

# 2. Benchmarks on CUDA (bf16 models by default on CUDA); RESULTS.md names the device.
timeout "$(left)" "$PY" -m benchmarks.run_all 2>&1 | tee "$OUT/bench.log"
cp benchmarks/RESULTS.md "$OUT/RESULTS.md" 2>/dev/null || true
echo "gpu_check done in $(( $(date +%s) - start )) s" | tee -a "$OUT/env.txt"
