#!/usr/bin/env bash
# One GPU session in one call (device time is scarce): install, the kernel property tests on the GPU,
# then the papers' table rows that fit. Everything lands under $OUT (default perf/results/gpu-session).
# Usage: bash perf/gpu_session.sh [tests_seconds] [bench_seconds]
set -u
OUT=${OUT:-perf/results/gpu-session}
mkdir -p "$OUT"
pip install --no-deps --no-build-isolation -e . -q > "$OUT/install.txt" 2>&1
# The checkout itself shadows the install when run from its root; link the package-dir mappings
# (kernels/ -> tritonrnn.kernels, perf/ -> tritonrnn.perf) so the in-tree package is complete.
[ -e tritonrnn/kernels ] || ln -s ../kernels tritonrnn/kernels
[ -e tritonrnn/perf ] || ln -s ../perf tritonrnn/perf
{ nvidia-smi -L; python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
    > "$OUT/device.txt" 2>&1
export CI=true  # the bounded hypothesis profile
timeout "${1:-90}" python -m pytest -q -rfE -p no:cacheprovider --durations=8 \
    tests/kernels/test_recurrence.py tests/kernels/test_cores_kernels.py tests/kernels/test_scan.py \
    tests/optim/test_equivalence.py > "$OUT/gpu-tests.txt" 2>&1
echo "pytest exit $?" >> "$OUT/gpu-tests.txt"
timeout "${2:-130}" python -m tritonrnn.perf.papers_table \
    --models LSTM,MomentumLSTM,AdamLSTM,RMSPropLSTM,SRLSTM,MomentumOrthogonalRNN,MomentumIndRNN \
    --providers tritonrnn:triton,tritonrnn:torch,torch.nn --out-dir "$OUT" > "$OUT/bench-log.txt" 2>&1
echo "bench exit $?" >> "$OUT/bench-log.txt"
tail -3 "$OUT/gpu-tests.txt"; tail -25 "$OUT/bench-log.txt"
