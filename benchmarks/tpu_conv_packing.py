r"""One convolution (forward + both gradients) compiled for a TPU v5e chip without the hardware:
the plain conv against the same conv on width-packed maps (nn/conv.width_packed_conv), priced by
the TPU compiler's own cycle estimates (osmnet_jax/aot/breakdown.py).

    JAX_PLATFORMS=cpu python benchmarks/tpu_conv_packing.py 3,64,64 7,3,64 7,64,3 3,3,64 \
        3,64,128 3,128,64 [--batch 8 --size 256 --topology tpu:v5e:2x2]

Each argument is kernel,Cin,Cout. Prints, per conv, the plain conv's estimate and the fraction of
the MXU's bf16 peak its FLOPs would use, then every pack factor f (f * max(Cin, Cout) <= 256)
with its speed-up: packed with a reshape in and out (one conv between unpacked layers), and on
maps already packed (a chain of packed layers, nn/conv.packed_conv). First checks on the CPU
that packing is exact. Needs the `aot` extra; about 2-4 min on 2 cores for the six convs above.
Results: BENCHMARKS.md ("Width-packed narrow convolutions on TPU").
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from osmnet_jax.aot import breakdown, targets  # noqa: E402
from osmnet_jax.nn import conv as conv_lib  # noqa: E402

DN = ("NHWC", "HWIO", "NHWC")


def plain(x, w, pad):
  return jax.lax.conv_general_dilated(x, w, (1, 1), pad, dimension_numbers=DN)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("convs", nargs="+", help="kernel,Cin,Cout, e.g. 7,64,3")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--topology", default="tpu:v5e:2x2")
  a = p.parse_args()
  convs = [tuple(int(v) for v in c.split(",")) for c in a.convs]

  rs = np.random.RandomState(0)
  for k, _, _ in convs:  # exactness on the host, float32, small channels
    pad = ((k // 2, k // 2),) * 2
    x = jnp.asarray(rs.randn(2, 9, 32, 3), jnp.float32)
    w = jnp.asarray(rs.randn(k, k, 3, 5), jnp.float32)
    err = float(jnp.abs(conv_lib.width_packed_conv(x, w, pad, 4) - plain(x, w, pad)).max())
    assert err < 1e-4, (k, err)

  tgt = targets.parse(a.topology)
  mesh = jax.sharding.Mesh(np.asarray(tgt.devices[:1]), ("x",))
  sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  peak = tgt.chip.peak_flops("bfloat16")
  clock = peak / (4 * 128 * 128 * 2)  # v5e: 4 MXUs of 128 x 128 multiply-adds per cycle
  n, s = a.batch, a.size

  def cycles(fn, k, ci, co, f=1):
    """f > 1: fn takes and returns maps already packed by f ([n, s, s/f, f*C])."""
    def loss(x, w, g):
      return jnp.sum(fn(x, w).astype(jnp.float32) * g)

    step = jax.jit(jax.grad(loss, argnums=(0, 1)), in_shardings=(sh,) * 3,
                   out_shardings=(sh, sh))
    args = (jax.ShapeDtypeStruct((n, s, s // f, f * ci), jnp.bfloat16),
            jax.ShapeDtypeStruct((k, k, ci, co), jnp.bfloat16),
            jax.ShapeDtypeStruct((n, s, s // f, f * co), jnp.float32))
    compiled = step.lower(*args).compile()
    return breakdown.summary(breakdown.instructions(compiled.as_text()), clock)["cycles"]

  print(f"{a.topology} one chip, batch {n}, {s} x {s}, bf16, forward + dx + dw")
  for k, ci, co in convs:
    pad = ((k // 2, k // 2),) * 2
    base = cycles(lambda x, w: plain(x, w, pad), k, ci, co)
    flops = 3 * 2 * n * s * s * k * k * ci * co
    line = (f"{k}x{k} {ci:3d}->{co:3d}: plain {base / 1e6:7.2f} M cycles "
            f"({flops / (base / clock) / peak:.3f} of peak)")
    f = 2
    while f * max(ci, co) <= 256:
      c = cycles(lambda x, w, f=f: conv_lib.width_packed_conv(x, w, pad, f), k, ci, co)
      r = cycles(lambda x, w, f=f: conv_lib.packed_conv(x, w, pad, f), k, ci, co, f)
      line += f" | f={f}: {c / 1e6:7.2f} ({base / c:.2f}x; already packed {base / r:.2f}x)"
      f *= 2
    print(line, flush=True)


if __name__ == "__main__":
  main()
