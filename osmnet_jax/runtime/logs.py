"""Console output a user can read: library INFO logs are quiet unless asked for.

orbax (CheckpointManager dumps its options and every save), TFDS and absl's own start-up lines
log at INFO through the same absl/Python logging as our stage summaries. ``quiet_library_logs``
keeps our records and every WARNING or worse, and drops the INFO/DEBUG records that come from
installed packages (site-packages / dist-packages). ``verbosity >= 1`` (absl's ``--verbosity``
flag, also ``-v 1``) keeps everything. TensorFlow's C++ start-up lines (oneDNN, CUDA probe)
bypass Python logging and are not affected.
"""
from __future__ import annotations

import logging
import os

_LIBRARY_DIRS = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")
# This package, wherever it is installed (its records always pass).
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class LibraryInfoFilter(logging.Filter):
  """Drops records below WARNING that were logged from an installed package."""

  def filter(self, record: logging.LogRecord) -> bool:
    path = record.pathname or ""
    if record.levelno >= logging.WARNING or path.startswith(_PACKAGE_DIR):
      return True
    return not any(d in path for d in _LIBRARY_DIRS)


_FILTER = LibraryInfoFilter()


def quiet_library_logs(verbosity: int = 0) -> None:
  """Install (verbosity <= 0) or remove (verbosity >= 1) the library-INFO filter on the absl
  handler and the root logger's handlers. Idempotent; call after flags are parsed."""
  from absl import logging as absl_logging

  handlers = list(logging.getLogger().handlers)
  absl_handler = absl_logging.get_absl_handler()
  if absl_handler not in handlers:
    handlers.append(absl_handler)
  for h in handlers:
    if verbosity >= 1:
      h.removeFilter(_FILTER)
    else:
      h.addFilter(_FILTER)
