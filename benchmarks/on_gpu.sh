#!/usr/bin/env bash
# On a lent NVIDIA GPU (< 8 min): the vox256 renderer train step and generate's render call,
# measured against the AOT prediction for the same compiled program, plus GPU-vs-CPU parity at
# `highest` matmul precision.
#
#   bash benchmarks/on_gpu.sh                    # writes $OUT (default benchmarks/results/on_gpu)
#   BATCH=8 FRAMES=32 STEPS=10 bash benchmarks/on_gpu.sh
#   PLATFORM=cpu CONFIG=configs/tiny_test.py bash benchmarks/on_gpu.sh    # smoke run, no GPU
#
# Needs a Python with jax[cuda12] (PYTHON=...; the device machine has no network, so nothing is
# installed here). Reports per step: measured time, measured MFU (compiled FLOPs / time / the
# chip's spec-sheet peak, osmnet_jax/aot/targets.py), the AOT roofline prediction of the same
# program (osmnet_jax/aot/report.py) and their ratio; generate: frames/s; parity: max |GPU - CPU|
# of the renderer's prediction and of one train step's loss, both in float32 at `highest`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export OUT="${OUT:-benchmarks/results/on_gpu}"
export CONFIG="${CONFIG:-configs/vox256.py}" BATCH="${BATCH:-8}" FRAMES="${FRAMES:-32}"
export STEPS="${STEPS:-10}" PLATFORM="${PLATFORM:-gpu}"
export TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false
# Triton GEMMs abort on the anti-aliasing dots in float32 (osmnet_jax/aot/compile.py says why).
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_triton_gemm=false"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
  > "$OUT/gpu.txt" || echo "no nvidia-smi" > "$OUT/gpu.txt"

timeout 470 "$PY" - <<'EOF'
import json, os, sys, time

sys.path.insert(0, os.getcwd())
import jax
import jax.numpy as jnp
import numpy as np

from osmnet_jax import renderer
from osmnet_jax.aot import __main__ as aot_main
from osmnet_jax.aot import compile as aot_compile
from osmnet_jax.aot import report, targets

out_dir, platform = os.environ["OUT"], os.environ["PLATFORM"]
cfg = aot_main.load_config(os.environ["CONFIG"])
b, frames, steps = int(os.environ["BATCH"]), int(os.environ["FRAMES"]), int(os.environ["STEPS"])
devs = jax.devices(platform)
target = targets.local("h100") if platform == "cpu" else targets.local()
target.devices = devs
size = aot_compile.image_size(cfg)
res = {"devices": [d.device_kind for d in devs], "config": os.environ["CONFIG"],
       "batch_per_chip": b, "jax": jax.__version__}


def timed(fn, *args, n=steps):
  out = fn(*args)
  jax.block_until_ready(out)  # compile + first run
  t0 = time.perf_counter()
  for _ in range(n):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / n, out


# --- Renderer train step (DP over the local devices): measured vs predicted.
prog = aot_compile.build("renderer", cfg, devs, b, "dp")
stage = aot_compile.renderer_stage(cfg)
with jax.default_device(devs[0]):
  state = stage.init_state(jax.random.PRNGKey(0), size)
compiled = prog.fn.lower(*prog.args).compile()
rng = np.random.default_rng(0)
img = lambda: rng.integers(0, 256, (b * len(devs), size, size, 3), dtype=np.uint8)
# 68 landmarks per frame (pixels): the program takes them; only the landmark terms read them.
marks = lambda: rng.uniform(0.3 * size, 0.7 * size, (b * len(devs), 68, 2)).astype(np.float32)
batch = {"source": img(), "driving": img(), "source_landmarks": marks(),
         "driving_landmarks": marks()}
mesh = aot_compile.make_mesh(devs, "dp")
state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
key = jax.random.PRNGKey(1)


def train(st):
  for _ in range(steps):
    st, m = compiled(st, batch, key)
  return st, m


state, m = compiled(state, batch, key)  # warm-up
jax.block_until_ready(m)
t0 = time.perf_counter()
state, m = train(state)
jax.block_until_ready(m)
step_s = (time.perf_counter() - t0) / steps
cpu = report.cpu_cost(aot_compile.build("renderer", cfg, jax.devices("cpu")[:1], b, "dp")
                      .fn.lower(*prog.args))
pred = report.analyse(target, prog, compiled, cpu)
own = report._cost(compiled.cost_analysis()).get("flops") or pred["flops_per_step"]
res["renderer"] = {
    "measured_step_s": step_s, "examples_per_s": b * len(devs) / step_s,
    "flops_per_step_per_device": own,
    "measured_mfu": own / step_s / target.chip.peak_flops(prog.compute_dtype),
    "predicted_step_s": pred["predicted_step_s"], "predicted_mfu": pred["predicted_mfu"],
    "measured_over_predicted": step_s / pred["predicted_step_s"],
    "bytes_per_device_compiled": pred["bytes_per_device"],
    "loss": float(m["total"]),
}
del state
print("renderer", json.dumps(res["renderer"], indent=1), flush=True)

# --- generate's render call: frames/s.
gprog = aot_compile.build("generate", cfg, devs, frames, "dp")
rcfg = stage.cfg
with jax.default_device(devs[0]):
  rvars = renderer.init(jax.random.PRNGKey(0), rcfg, size)
k = rcfg.num_kp
src = jnp.asarray(rng.random((1, size, size, 3), np.float32))
kp_src = {"value": jnp.zeros((1, k, 2)), "jacobian": jnp.tile(jnp.eye(2), (1, k, 1, 1))}
n = frames * len(devs)
kp_drv = {"value": jnp.asarray(rng.uniform(-0.5, 0.5, (n, k, 2)), jnp.float32),
          "jacobian": jnp.tile(jnp.eye(2), (n, k, 1, 1))}
gcomp = gprog.fn.lower(*gprog.args).compile()
g_s, _ = timed(gcomp, rvars, src, kp_src, kp_drv)
gcpu = report.cpu_cost(aot_compile.build("generate", cfg, jax.devices("cpu")[:1], frames, "dp")
                       .fn.lower(*gprog.args))
gpred = report.analyse(target, gprog, gcomp, gcpu)
res["generate"] = {"measured_call_s": g_s, "frames_per_s": n / g_s,
                   "predicted_call_s": gpred["predicted_step_s"],
                   "measured_over_predicted": g_s / gpred["predicted_step_s"]}
print("generate", json.dumps(res["generate"], indent=1), flush=True)

# --- Parity at `highest`: float32 renderer forward and one train step's loss, GPU vs CPU.
pcfg = aot_main.load_config(os.environ["CONFIG"])
pcfg.renderer.compute_dtype = "float32"
pstage = aot_compile.renderer_stage(pcfg)
cpu0 = jax.devices("cpu")[0]
pb = 2
with jax.default_matmul_precision("highest"):
  with jax.default_device(cpu0):
    pstate = pstage.init_state(jax.random.PRNGKey(0), size)
  pbatch = {k_: v[:pb] for k_, v in batch.items()}
  outs = {}
  for dev in (devs[0], cpu0):
    st = jax.device_put(pstate, dev)
    bt = jax.device_put(pbatch, dev)
    _, mt = jax.jit(pstage.train_step)(st, bt, jax.device_put(key, dev))
    vars_ = {m_: {"params": st.params[m_], "batch_stats": st.batch_stats[m_]}
             for m_ in ("kp_detector", "generator")}
    x = bt["source"].astype(jnp.float32) / 255
    kp = renderer.detect_keypoints(vars_, pstage.cfg, x)  # jitted inside; runs where x lives
    pred_img = renderer.render(vars_, pstage.cfg, x, kp, kp)
    outs[dev.platform] = (float(mt["total"]), np.asarray(pred_img["prediction"]))
(l_gpu, p_gpu), (l_cpu, p_cpu) = outs[devs[0].platform], outs["cpu"]
res["parity_highest"] = {"loss_gpu": l_gpu, "loss_cpu": l_cpu,
                         "loss_rel_diff": abs(l_gpu - l_cpu) / abs(l_cpu),
                         "prediction_max_abs_diff": float(np.max(np.abs(p_gpu - p_cpu)))}
print("parity", json.dumps(res["parity_highest"], indent=1), flush=True)

with open(os.path.join(out_dir, "on_gpu.json"), "w") as f:
  json.dump(res, f, indent=2)
print(f"wrote {out_dir}/on_gpu.json")
EOF
