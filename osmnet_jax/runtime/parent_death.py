"""Child processes that must not outlive their parent (data.prepare's pool workers, scaling
sweep workers): the Linux kernel's parent-death signal."""
from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def arm_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
  """Asks the kernel to send ``sig`` to this process when its parent thread exits (prctl
  PR_SET_PDEATHSIG) -> False where that does not exist (not Linux). A parent that already died
  before this call is not noticed: callers check for that themselves."""
  try:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
  except (OSError, AttributeError):
    return False
  return True
