"""The aot max-batch search (aot/search.py) on a stand-in for the compiler: no compile, no aot
extra. Every probe of the real search is a full compile (12-15 min for the vox256 renderer on a
2-core CPU), so the number of probes is part of what is tested."""
from __future__ import annotations

import pytest

from osmnet_jax.aot import search

GIB = 2**30
HBM = 16 * GIB  # v5e


class FakeProbe(search.Prober):
  """bytes(b) = fixed + per_example * b; the compiler refuses b >= refuse_from (or over HBM)."""

  def __init__(self, fixed: float, per_example: float, refuse_from: int | None = None):
    super().__init__(None, None, "renderer", "dp", log=lambda _: None)
    self.fixed, self.per_example, self.refuse_from = fixed, per_example, refuse_from
    self.calls: list[int] = []

  def __call__(self, b: int) -> dict:
    if b not in self.results:
      self.calls.append(b)
      nbytes = self.fixed + self.per_example * b
      refused = self.refuse_from is not None and b >= self.refuse_from
      self.results[b] = {"fits": nbytes <= HBM and not refused, "bytes_per_device": nbytes}
    return self.results[b]


def _truth(p: FakeProbe, limit: int) -> int:
  return max((b for b in range(1, limit + 1) if p.fits(b)), default=0)


@pytest.mark.parametrize("start", [1, 8, 16])
def test_linear_memory_found_in_four_probes(start):
  # The vox256 renderer's shape: ~1.1 GiB fixed + ~0.33 GiB per example -> 45 fit in 16 GiB.
  p = FakeProbe(1.1 * GIB, 0.33 * GIB)
  got = search.max_batch(p, HBM, limit=1024, start=start)
  assert got == 45 == _truth(FakeProbe(1.1 * GIB, 0.33 * GIB), 1024)
  # Two fitting probes give the line, its guess (45) fits, and one step above it (47) is
  # refused: four compiles. The previous search doubled past the guess and bisected back
  # (8 probes, 90 -> 67 -> 56 -> 50 -> 47, from start 1).
  assert len(p.calls) == 4, p.calls
  assert p.calls[0] == start


def test_compiler_refuses_below_the_memory_line():
  # The TPU compiler may refuse earlier than the bytes line says (fragmentation, scheduling):
  # the answer is then found by bisection, within 1/16.
  p = FakeProbe(1.1 * GIB, 0.33 * GIB, refuse_from=40)
  got = search.max_batch(p, HBM, limit=1024, start=16)
  assert 39 - 39 // 16 <= got <= 39
  assert all(b < 40 for b in p.calls if p.results[b]["fits"])
  assert len(p.calls) <= search.MAX_PROBES


def test_compiler_squeeze_near_the_limit_does_not_throw_the_guess():
  """The vox256 renderer on v5e: linear to 44 per chip (14.81 GiB), then the compiler squeezes
  (48: 14.91 GiB) and refuses above ~52. The guess uses the widest span of fitting probes."""

  class Squeeze(FakeProbe):
    def __call__(self, b):
      if b not in self.results:
        self.calls.append(b)
        nbytes = (1.16 + 0.3375 * min(b, 44) + 0.025 * max(b - 44, 0)) * GIB
        self.results[b] = {"fits": b <= 52, "bytes_per_device": nbytes}
      return self.results[b]

  p = Squeeze(0.0, 0.0)
  got = search.max_batch(p, HBM, limit=1024, start=16)
  assert 52 - 52 // 16 <= got <= 52
  # Squeezed probes move the line a little each time, so this takes the whole probe budget;
  # a line through the last two probes guessed 91 at the first squeezed probe.
  assert len(p.calls) <= search.MAX_PROBES, p.calls
  assert max(p.calls) < 60, p.calls


def test_nothing_fits_and_limit():
  assert search.max_batch(FakeProbe(17 * GIB, GIB), HBM, limit=64) == 0
  # Everything fits up to the limit: the search stops at the limit, never beyond it.
  p = FakeProbe(0.0, 1e-3 * GIB)
  assert search.max_batch(p, HBM, limit=64, start=8) == 64
  assert max(p.calls) == 64


@pytest.mark.parametrize("lo,hi,limit,guess", [
    (0, 1025, 1024, None), (8, 1025, 1024, None), (8, 1025, 1024, 45), (45, 1025, 1024, 45),
    (45, 1025, 1024, 30), (45, 47, 1024, 45), (16, 45, 1024, 45), (16, 45, 1024, 90),
    (1, 3, 1024, None)])
def test_next_probe_is_strictly_inside(lo, hi, limit, guess):
  nb = search.next_probe(lo, hi, limit, guess)
  assert lo < nb < hi and nb <= limit
