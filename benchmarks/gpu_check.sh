#!/usr/bin/env bash
# The GPU checks in one go: the CUDA cases of the unit tests, then the benchmarks on the GPU.
# Each stage has its own time limit, so a slow stage cannot starve the next one.
#
#   bash benchmarks/gpu_check.sh [OUTDIR]
#
# Needs torch with CUDA, POT and geomloss (pip install -e ".[test,bench]"). Logs go to OUTDIR.
set -u
OUT=${1:-_build/gpu}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
PY=${PY:-python3}

stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s)"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | tail -n 40
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0))s"
}

$PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
stage tests 90 $PY -m pytest tests -q -x -k cuda -p no:cacheprovider \
    --ignore=tests/test_chapters.py --ignore=tests/test_pages.py --ignore=tests/test_tools.py
stage sinkhorn 110 $PY benchmarks/bench_sinkhorn.py --device cuda --sizes 2000 8000 \
    --rels 0.05 0.01 --dtypes float32 --budget 2 --quick
stage sinkhorn_clusters 100 $PY benchmarks/bench_sinkhorn.py --device cuda --problem clusters \
    --sizes 2000 8000 --rels 0.05 0.01 --dtypes float32 --budget 2 --quick --skip-geomloss
stage online_rate 30 $PY - <<'EOF'
import time, torch
from otbook.costs import PointCloud
from otbook.sinkhorn.kernel import OnlineKernel
dev = torch.device("cuda")
for n, dtype in ((50_000, torch.float32), (50_000, torch.float64)):
    x = torch.rand(n, 3, device=dev, dtype=dtype)
    y = torch.rand(n, 3, device=dev, dtype=dtype)
    w = torch.full((1, n), 1.0 / n, device=dev, dtype=dtype)
    K = OnlineKernel(PointCloud(x, y).broadcast(()), w, w, 0.01, 2**30)
    K.start()
    K.mv(w)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        K.mv(w)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / 10
    print(f"online (blockwise) kernel product, n = m = {n}, {dtype}: {dt * 1e3:.1f} ms, "
          f"{n * n / dt:.3e} pair-updates/s")
EOF
stage otdd 150 $PY benchmarks/bench_otdd.py --device cuda --skip-exact --pot-backends torch \
    --sizes 2000 8000 --large 60000
