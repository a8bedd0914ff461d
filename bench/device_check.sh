#!/usr/bin/env bash
# One GPU check of the inner-loop engines, sized for under 8 minutes on one H100/H200:
#   1. environment and install (prints what is missing instead of failing on it);
#   2. equality on CUDA in float64: batched vs higher meta-gradients (paper, first order,
#      ANIL, adapt_bn, meta_clip, Mini-ImageNet), the CUDA-graph step vs the eager one,
#      and evaluation accuracies;
#   3. every GPU figure: ms per paper meta-step per engine (bare higher loop, higher,
#      batched with CUDA graph, batched eager), the ratios, a 600-task evaluation per
#      engine, the quick preset's step, and a profile of one batched step.
# Run from the repository root: bash bench/device_check.sh   (data: $REPSCOPE_DATA,
# ../shared/data or shared/data; without it the timings use random episodes of the same
# shapes, which cost the same).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
T0=$(date +%s)
stage() { echo; echo "=== $1 ($(( $(date +%s) - T0 )) s) ==="; }

stage "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -2
$PY - <<'EOF'
import sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0))
EOF

stage "install"
# the package itself, without touching the preinstalled CUDA torch
$PY -m pip install -e . --no-deps -q 2>&1 | tail -2
MISSING=$($PY - <<'EOF'
import importlib
need = {"higher": "higher", "numpy": "numpy", "xarray": "xarray", "netCDF4": "netCDF4",
        "scipy": "scipy", "tqdm": "tqdm", "PIL": "pillow", "rsatoolbox": "rsatoolbox",
        "sklearn": "scikit-learn", "matplotlib": "matplotlib"}
print(" ".join(pip for mod, pip in need.items() if importlib.util.find_spec(mod) is None))
EOF
)
if [ -n "$MISSING" ]; then
  echo "missing: $MISSING; trying pip (may be offline)"
  $PY -m pip install -q $MISSING 2>&1 | tail -2
  $PY -c "import higher, numpy, xarray" 2>&1 | tail -1
fi
$PY -c "import repscope.training.engines as e; print('engines', sorted(e.ENGINES))" || {
  echo "FATAL: repscope does not import (see above)"; exit 1; }

DATA=""
for d in "${REPSCOPE_DATA:-}" ../shared/data shared/data; do
  if [ -n "$d" ] && [ -d "$d/omniglot" ]; then DATA=$d; break; fi
done
if [ -n "$DATA" ]; then echo "data: $DATA"; SRC=(--data "$DATA"); else
  echo "data: none found; timings use random episodes (--synthetic)"; SRC=(--synthetic); fi

stage "equality on CUDA, float64"
timeout 150 $PY - <<'EOF'
import warnings
from types import SimpleNamespace
import torch
from repscope.training.config import get_preset
from repscope.training.engines import cuda_graph, get_engine
from repscope.training.model import build_model

dev = torch.device("cuda")
torch.backends.cudnn.deterministic = True

def tasks(cfg, n, seed):
    g = torch.Generator().manual_seed(seed)
    s = (cfg.in_channels, cfg.image_size, cfg.image_size)
    ns, nq = cfg.n_way * cfg.k_shot, cfg.n_way * cfg.n_query
    return [SimpleNamespace(support_x=torch.rand(ns, *s, generator=g, dtype=torch.float64),
                            support_y=torch.arange(ns) % cfg.n_way,
                            query_x=torch.rand(nq, *s, generator=g, dtype=torch.float64),
                            query_y=torch.arange(nq) % cfg.n_way) for _ in range(n)]

def grads(engine, cfg, eps, graph=True):
    torch.manual_seed(0)
    m = build_model(cfg).double().to(dev)
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    cuda_graph.ENABLED = graph
    try:
        for _ in range(2 if graph else 1):  # the second call replays the captured graph
            get_engine(engine).meta_step(m, opt, eps, cfg)
    finally:
        cuda_graph.ENABLED = True
    return [p.grad.clone() for p in m.parameters()]

def rel(a, b):
    scale = max(x.abs().max().item() for x in a)
    return max((x - y).abs().max().item() for x, y in zip(a, b)) / scale

cases = {"paper": ("omniglot-20way-1shot", {}),
         "first_order": ("omniglot-20way-1shot", dict(first_order=True, meta_batch=4)),
         "anil": ("omniglot-20way-1shot", dict(adapt_layers="head", meta_batch=4)),
         "adapt_bn": ("quick", dict(adapt_bn=True, meta_batch=4, inner_steps=3)),
         "meta_clip": ("quick", dict(meta_clip=0.05, meta_batch=4, inner_steps=3)),
         "miniimagenet": ("miniimagenet-5way-1shot", dict(inner_steps=3))}
ok = True
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for name, (preset, kw) in cases.items():
        cfg = get_preset(preset, device="cuda", **kw)
        eps = tasks(cfg, cfg.meta_batch, 0)
        ref = grads("higher", cfg, eps)
        eager = grads("batched", cfg, eps, graph=False)
        graph = grads("batched", cfg, eps, graph=True)
        r1, r2 = rel(ref, eager), rel(ref, graph)
        good = r1 < 1e-10 and r2 < 1e-10
        ok &= good
        print(f"{name:13s} batched eager vs higher {r1:.1e}, CUDA graph vs higher {r2:.1e} "
              f"{'PASS' if good else 'FAIL'} (1e-10)")
for w in caught:
    print("warning:", w.message)
cfg = get_preset("quick", device="cuda")
torch.manual_seed(0)
m = build_model(cfg).double().to(dev)
eps = tasks(cfg, 40, 1)
a = get_engine("higher").evaluate(m, eps, cfg, 5)
b = get_engine("batched").evaluate(m, eps, cfg, 5)
print(f"evaluation of 40 tasks: accuracies equal: {bool((a == b).all())} (max diff {abs(a - b).max():.3f})")
print("EQUALITY", "PASS" if ok and (a == b).all() else "FAIL")
EOF

stage "paper meta-step per engine, 600-task evaluation"
timeout 300 $PY bench/bench_maml.py --device cuda --config paper --repeats 8 --eval-tasks 600 "${SRC[@]}"

stage "quick meta-step per engine, and a profile of one batched paper step"
timeout 60 $PY bench/bench_maml.py --device cuda --config quick --repeats 20 "${SRC[@]}"
timeout 60 $PY bench/bench_maml.py --device cuda --config paper --repeats 1 --no-bare --profile "${SRC[@]}" 2>&1 | tail -24

stage "done"
