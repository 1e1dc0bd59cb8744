"""data.prepare's per-video work as an Apache Beam pipeline (the default runner of data.prepare).

  videos -> Reshuffle (spread over workers) -> ProcessVideo -> 'ok' records, 'skipped' records
  (the side output report.json is made of), 'unavailable' (the landmark backend could not be made)
  -> JSON lines under WORK/beam/, read back by data.prepare.

One element per video: ``(video_id, speaker, path)``. ProcessVideo builds the landmark backend
once per worker (``setup``) and runs process.run_one, which writes the video's work record
(WORK/<video_id>.{npz,json}) atomically; a video whose record exists is not redone, so a rerun
after a crash or kill -9 (or a runner retrying a bundle) resumes and ends with the same records.
The clips are then written by TFDS's Beam support (builder.build with the same options).
"""
from __future__ import annotations

import json
import os
import threading
import time

import apache_beam as beam

from data.talking_videos import process, storage

OK, SKIPPED, UNAVAILABLE = "ok", "skipped", "unavailable"


def _descends_from(pid: int, depth: int = 3) -> bool:
  """Whether process ``pid`` is this one's parent, grandparent, ... (Linux /proc)."""
  parent = os.getppid()
  for _ in range(depth):
    if parent == pid:
      return True
    try:
      with open(f"/proc/{parent}/stat") as f:
        parent = int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
      return False
  return False


def _exit_with_driver(driver_pid: int) -> None:
  """A DirectRunner worker (started by data.prepare through ``sh -c``) ends when data.prepare
  dies, even by kill -9: it would otherwise finish its bundle holding its models' memory. The
  driver's death re-parents the worker's ``sh`` to init. In-process workers and cluster workers
  (not descendants of the driver) are left alone."""
  if os.getpid() == driver_pid or not _descends_from(driver_pid):
    return

  def watch():
    while _descends_from(driver_pid):
      time.sleep(0.5)
    os._exit(1)  # pylint: disable=protected-access

  threading.Thread(target=watch, name="driver-watch", daemon=True).start()


class ProcessVideo(beam.DoFn):
  """(video_id, speaker, path) -> its work record: main output if 'ok', else SKIPPED."""

  def __init__(self, backend: str, opts: process.Options, work_dir: str, retry_skipped: bool,
               driver_pid: int):
    super().__init__()
    self._name, self._opts, self._work_dir = backend, opts, work_dir
    self._retry_skipped, self._driver_pid = retry_skipped, driver_pid
    self._backend, self._error = None, None

  def setup(self):
    _exit_with_driver(self._driver_pid)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from osmnet_jax.face import landmarks  # pylint: disable=g-import-not-at-top

    try:
      self._backend = landmarks.get(self._name)
    except landmarks.BackendUnavailable as e:  # reported by data.prepare, which exits 2
      self._error = str(e)

  def process(self, job):
    video_id, speaker, path = job
    if self._error is not None:
      yield beam.pvalue.TaggedOutput(UNAVAILABLE, self._error)
      return
    rec = process.read_record(self._work_dir, video_id)
    if rec is None or (self._retry_skipped and rec["status"] != "ok"):
      rec = process.run_one(path, video_id, speaker, self._backend, self._opts, self._work_dir)
    yield rec if rec["status"] == "ok" else beam.pvalue.TaggedOutput(SKIPPED, rec)


def run(jobs: list[tuple[str, str, str]], *, backend: str, opts: process.Options, work_dir: str,
        retry_skipped: bool, options) -> dict[str, list]:
  """Runs the pipeline over ``jobs`` (video_id, speaker, path) with PipelineOptions ``options``
  -> {OK: records, SKIPPED: records, UNAVAILABLE: messages}."""
  out_dir = storage.join(work_dir, "beam")
  storage.rmtree(out_dir)  # outputs of an earlier (maybe killed) run
  with beam.Pipeline(options=options) as p:
    outs = (p
            | "Videos" >> beam.Create(jobs)
            | "Spread" >> beam.Reshuffle()
            | "Process" >> beam.ParDo(
                ProcessVideo(backend, opts, work_dir, retry_skipped, os.getpid())
            ).with_outputs(SKIPPED, UNAVAILABLE, main=OK))
    for tag in (OK, SKIPPED, UNAVAILABLE):
      _ = (outs[tag]
           | f"Json_{tag}" >> beam.Map(json.dumps, sort_keys=True)
           | f"Write_{tag}" >> beam.io.WriteToText(storage.join(out_dir, tag),
                                                   file_name_suffix=".jsonl"))
  out = {}
  for tag in (OK, SKIPPED, UNAVAILABLE):
    out[tag] = []
    for path in storage.glob(storage.join(out_dir, tag + "-*.jsonl")):
      with storage.open(path) as f:
        out[tag] += [json.loads(line) for line in f if line.strip()]
  return out
