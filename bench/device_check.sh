#!/usr/bin/env bash
# GPU checks in one go: the CUDA-marked tests and the GPU rows of the benchmarks.
#   bash bench/device_check.sh
# On a machine without a CUDA GPU it says so and exits 0. Each step has its own time
# limit (7.5 minutes at most in all); one summary table is printed at the end, and the
# exit status is 1 if a step failed or ran out of time.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

if ! "$PY" -c "import medrecon" 2>/dev/null; then
    echo "== installing medrecon (pip install -e .)"
    timeout 60 "$PY" -m pip install -q --no-deps -e . || echo "install failed; going on"
fi
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # see medrecon/threads.py
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null
then
    echo "no CUDA GPU here: nothing to check (exit 0)"
    exit 0
fi
"$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"

LOGS=$(mktemp -d)
STEPS=() STATUS=() SECS=() FAILED=0
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s): $*"
    local start=$SECONDS rc=0
    timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1 || rc=$?
    tail -n 25 "$LOGS/$name.log"
    local status=ok
    if [ "$rc" = 124 ]; then status="TIMEOUT"; FAILED=1
    elif [ "$rc" != 0 ]; then status="FAIL($rc)"; FAILED=1; fi
    STEPS+=("$name"); STATUS+=("$status"); SECS+=($((SECONDS - start)))
}

step cuda-tests 150 "$PY" -m pytest -m cuda -q -p no:cacheprovider
step bench-ct 80 "$PY" bench/bench_ct.py --sizes 256 --repeats 3
step bench-nufft 80 "$PY" bench/bench_nufft.py --repeats 3
step bench-diffusion 80 "$PY" bench/bench_diffusion.py --device cuda --steps 50

echo
echo "================ summary ================"
printf "%-16s %-12s %6s\n" step status seconds
for i in "${!STEPS[@]}"; do
    printf "%-16s %-12s %6s\n" "${STEPS[$i]}" "${STATUS[$i]}" "${SECS[$i]}"
done
echo "-- GPU rows of the benchmarks (header + cuda lines) --"
for name in bench-ct bench-nufft; do
    [ -f "$LOGS/$name.log" ] && grep -E "^(device|cuda)" "$LOGS/$name.log" | sed "s/^/$name: /"
done
[ -f "$LOGS/bench-diffusion.log" ] && tail -n 8 "$LOGS/bench-diffusion.log" \
    | sed "s/^/bench-diffusion: /"
echo "-- cuda tests --"
[ -f "$LOGS/cuda-tests.log" ] && tail -n 1 "$LOGS/cuda-tests.log"
exit "$FAILED"
