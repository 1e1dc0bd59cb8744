"""Files of data.prepare on a local disk or in a bucket (``gs://``, ``s3://``, any URL
``tf.io.gfile`` knows).

Local paths go through ``os`` / ``open`` (no TensorFlow import in the worker processes, which
never need it); URLs through ``tf.io.gfile``. ``s3://`` needs ``import tensorflow_io`` (TF moved
its S3 file system there); ``gs://`` is built into TensorFlow.
"""
from __future__ import annotations

import builtins
import contextlib
import glob as glob_lib
import os
import shutil
import tempfile


def is_url(path: str) -> bool:
  return "://" in path


def _gfile(path: str):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if path.startswith("s3://"):
    try:
      import tensorflow_io  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError as e:
      raise ImportError(f"{path}: TensorFlow reads s3:// through tensorflow-io; pip install "
                        "tensorflow-io (or use gs:// or a local path)") from e
  return tf.io.gfile


def join(*parts: str) -> str:
  """os.path.join that keeps '/' for URLs."""
  return "/".join(p.rstrip("/") for p in parts) if is_url(parts[0]) else os.path.join(*parts)


def exists(path: str) -> bool:
  return _gfile(path).exists(path) if is_url(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  return _gfile(path).isdir(path) if is_url(path) else os.path.isdir(path)


def makedirs(path: str) -> None:
  if is_url(path):
    _gfile(path).makedirs(path)
  else:
    os.makedirs(path, exist_ok=True)


def remove(path: str) -> None:
  if is_url(path):
    _gfile(path).remove(path)
  else:
    os.remove(path)


def rmtree(path: str) -> None:
  """Removes a folder and everything in it; nothing if it does not exist."""
  if is_url(path):
    if _gfile(path).exists(path):
      _gfile(path).rmtree(path)
  else:
    shutil.rmtree(path, ignore_errors=True)


def glob(pattern: str) -> list[str]:
  return sorted(_gfile(pattern).glob(pattern) if is_url(pattern) else glob_lib.glob(pattern))


def walk(root: str, onerror=None):
  """os.walk (top-down, so callers may prune ``dirnames``)."""
  if not is_url(root):
    return os.walk(root, onerror=onerror)
  return _gfile(root).walk(root, topdown=True, onerror=onerror)


def open(path: str, mode: str = "r"):  # pylint: disable=redefined-builtin
  return _gfile(path).GFile(path, mode) if is_url(path) else builtins.open(path, mode)


def write_atomic(path: str, data: bytes) -> None:
  """Readers see the old file or the whole new one, never a part: a local file is written
  beside the target and renamed over it; an object store (gs://, s3://) publishes an object
  only when its upload completes."""
  if is_url(path):
    with _gfile(path).GFile(path, "wb") as f:
      f.write(data)
    return
  tmp = f"{os.path.dirname(path)}/.tmp-{os.getpid()}-{os.path.basename(path)}"
  try:
    with builtins.open(tmp, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def read_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


@contextlib.contextmanager
def local_copy(path: str, sidecars: tuple[str, ...] = ()):
  """Yields a local path of ``path`` (itself if local; else a temp copy, with the files
  ``path`` minus its extension plus each of ``sidecars`` beside it, where they exist): the
  decoder (ffmpeg) reads local files only."""
  if not is_url(path):
    yield path
    return
  with tempfile.TemporaryDirectory(prefix="prepare-") as tmp:
    local = os.path.join(tmp, os.path.basename(path))
    gfile = _gfile(path)
    gfile.copy(path, local)
    stem = os.path.splitext(path)[0]
    for suffix in sidecars:
      if gfile.exists(stem + suffix):
        gfile.copy(stem + suffix, os.path.splitext(local)[0] + suffix)
    yield local

