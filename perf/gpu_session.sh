#!/usr/bin/env bash
# One GPU session in one call (device time is scarce; issue #13). A thin driver: the logic is in
# perf/gpu_session.py (tritonrnn.perf.gpu_session) and, for `tiers`, tritonrnn.perf.recurrence_tiers.
#
#   bash perf/gpu_session.sh [SECTION...]     SECTION: tests table scan optim tiers (default: all five)
#   DRY_RUN=1 bash perf/gpu_session.sh        tiny shapes on the CPU under Triton's interpreter (CI:
#                                             tests/test_gpu_session.py); no install, no symlinks
#   OUT=DIR                                   results directory (default perf/results/<device>-<UTC time>)
#
#   BUDGET_<section>=S                        that section's budget in seconds (e.g. BUDGET_tiers=400 with the
#                                             `tiers` section alone: its full run of the recurrence tiers)
# Each section runs under its own `timeout`, appends its rows as they finish, and isolates every row; a failing
# or timed-out section never stops the next. DIR/status.txt has each section's exit status, DIR/summary.md the
# tables. Time on an H100/H200, at most: install 30 s + the five budgets (380 s; a section stops starting rows
# at its budget) + five margins (50 s; the hard `timeout` is budget + margin) + report 20 s = 480 s if every
# section runs into its hard stop, about 7 minutes when they end at their budgets: within the 8-minute target.
# The recurrence tiers (issue #12: float64 checks of every tier, the barrier, the tiers against cuDNN) get the
# largest budget; each of their rows compiles its own kernels, so they need more time per row than the others.
set -u
SECTIONS=${*:-tests table scan optim tiers}
DRY=${DRY_RUN:-0}
# Seconds per section: budget (when a section stops starting rows) and the hard `timeout` (budget + margin).
declare -A BUDGET=([tests]=70 [table]=120 [scan]=30 [optim]=30 [tiers]=130)
MARGIN=10
PY=${PYTHON:-python}

if [ "$DRY" = 1 ]; then
    export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=""
    for s in "${!BUDGET[@]}"; do BUDGET[$s]=300; done  # a stop for a hung run, not a size (a loaded CI CPU)
    REPORT_TIMEOUT=300  # likewise: on a loaded CPU importing torch alone took over 20 s (status 124)
fi
for s in "${!BUDGET[@]}"; do  # BUDGET_<section> overrides (after the dry run's: a test may shorten one)
    v=BUDGET_$s; [ -n "${!v:-}" ] && BUDGET[$s]=${!v}
done
if [ "$DRY" = 1 ]; then
    DEVICE=dry-run-cpu
    DRYFLAG=--dry-run
else
    DRYFLAG=
    timeout 30 pip install --no-deps --no-build-isolation -e . -q > /tmp/tritonrnn-install.txt 2>&1
    # The checkout itself shadows the install when run from its root; link the package-dir mappings
    # (kernels/ -> tritonrnn.kernels, perf/ -> tritonrnn.perf) so the in-tree package is complete.
    [ -e tritonrnn/kernels ] || ln -s ../kernels tritonrnn/kernels
    [ -e tritonrnn/perf ] || ln -s ../perf tritonrnn/perf
    DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr -cs 'A-Za-z0-9' '-' \
             | sed 's/^-*//; s/-*$//' | tr 'A-Z' 'a-z')
    DEVICE=${DEVICE:-unknown-gpu}
fi
DIR=${OUT:-perf/results/${DEVICE}-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$DIR"
[ "$DRY" = 1 ] || mv /tmp/tritonrnn-install.txt "$DIR/install.txt"
{
    echo "device: $DEVICE"; [ "$DRY" = 1 ] || nvidia-smi -L
    $PY -c "import torch; print('torch', torch.__version__)"
    $PY -c "import triton; print('triton', triton.__version__)" 2>&1 | tail -1
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo -dirty)"
    echo "sections: $SECTIONS; started $(date -u +%FT%TZ)"
} > "$DIR/device.txt" 2>&1
: > "$DIR/status.txt"

for s in $SECTIONS; do
    b=${BUDGET[$s]:-}
    if [ -z "$b" ]; then echo "$s unknown-section" >> "$DIR/status.txt"; continue; fi
    if [ "$s" = tiers ]; then  # the recurrence-tier benchmark (issue #12), written by its own module
        timeout $((b + MARGIN)) $PY -m tritonrnn.perf.recurrence_tiers --out-dir "$DIR" --budget-s "$b" $DRYFLAG \
            > "$DIR/tiers-log.txt" 2>&1
    else
        timeout $((b + MARGIN)) $PY -m tritonrnn.perf.gpu_session "$s" --out-dir "$DIR" --budget-s "$b" $DRYFLAG \
            > "$DIR/$s-log.txt" 2>&1
    fi
    rc=$?
    echo "$s $rc" >> "$DIR/status.txt"
    echo "section $s: exit $rc ($DIR/$s-log.txt)"
done
timeout "${REPORT_TIMEOUT:-20}" $PY -m tritonrnn.perf.gpu_session report --out-dir "$DIR" $DRYFLAG > "$DIR/report-log.txt" 2>&1
echo "report $?" >> "$DIR/status.txt"
echo "results: $DIR"; cat "$DIR/status.txt"
