"""Runs a converted Audio2Head checkpoint end to end in JAX (its `inference.py` procedure).

    variables, cfg = convert.load_audio2head("audio2head.pth.tar")
    out = inference.animate(variables, cfg, image, waveform)   # 16 kHz mono speech
    out["frames"]  # uint8 [T,256,256,3] at 25 fps

Steps, as the published script does them:
  1. 41-dim audio features (`audio2head.features`), grouped 4 rows per video frame -> T frames;
  2. audio2pose from the 256x256 source image + all T frames -> T+1 poses -> rotation vector and
     translation (`models.audio2pose.denormalize_pose`);
  3. every pose drawn as a projected 3-D box, 256x256 single-channel (`draw_pose_box`);
  4. audio2kp over windows of seq_len frames every seq_len/2 frames (zero audio and the last pose
     past the end); from window 0 frames [0, 3/4 seq_len) are kept, from later ones
     [1/4, 3/4) seq_len, which tiles the timeline without overlap;
  5. the FOMM renderer warps the source by (source keypoints -> predicted keypoints) per frame
     (absolute keypoints, no relative motion transfer), frames = uint8(prediction * 255).
Pose rows: frames i < T use pose i (row 0 comes from the image alone, as in the original); padding
frames past the end use row T.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import numpy as np

from osmnet_jax import renderer
from osmnet_jax.audio2head import features as feats
from osmnet_jax.models import audio2kp as a2k
from osmnet_jax.models import audio2pose as a2p

IMAGE_SIZE = 256
FPS = 25
# Audio2Head's pinhole camera for 256 px images and its pose box (rear 150 wide at depth 0,
# front 200 wide at depth 100), each rectangle closed by repeating its first corner.
CAMERA = np.array([[233.333, 0, 128], [0, 233.333, 128], [0, 0, 1]], np.float64)
BOX_POINTS = np.array(
    [(-75, -75, 0), (-75, 75, 0), (75, 75, 0), (75, -75, 0), (-75, -75, 0),
     (-100, -100, 100), (-100, 100, 100), (100, 100, 100), (100, -100, 100), (-100, -100, 100)],
    np.float64,
)


@functools.lru_cache(maxsize=8)
def _jitted_apply(kind: str, cfg_items: tuple):
  """One jitted `apply` per (model, sizes); `cfg_items` is `_cfg_key(cfg)` (hashable)."""
  cfg = dict(cfg_items)
  model = a2k.from_config(cfg) if kind == "audio2kp" else a2p.from_config(cfg)
  return jax.jit(model.apply)


def _cfg_key(cfg) -> tuple:
  return tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v)
                      for k, v in dict(cfg).items()))


def predict_keypoints(variables, cfg, audio, id_img, pose) -> dict:
  """audio2kp: audio [B,T,4,41], id_img [B,256,256,3] in [0,1], pose box images [B,T,256,256]
  -> {'value': [B,T,K,2], 'jacobian': [B,T,K,2,2]} driving keypoints for `renderer.render`."""
  apply = _jitted_apply("audio2kp", _cfg_key(cfg["audio2kp"]))
  return apply(variables["audio2kp"], audio, id_img, pose)


def predict_poses(variables, cfg, img, audio) -> jax.Array:
  """audio2pose: img [B,H,W,3] in [0,1], audio [B,T,4,41] -> normalised poses [B,T+1,6]
  (`models.audio2pose.denormalize_pose` gives rotation / translation)."""
  apply = _jitted_apply("audio2pose", _cfg_key(cfg["audio2pose"]))
  return apply(variables["audio2pose"], img, audio)


def draw_pose_box(rot, trans) -> np.ndarray:
  """Head pose (rotation vector [3], translation [3]) -> float32 [256,256] box drawing (0 / 255).

  Drawn with OpenCV on a float64 canvas, like the original (OpenCV draws anti-aliased lines only
  on 8-bit images, so these are plain 8-connected 2 px lines).
  """
  import cv2  # pylint: disable=g-import-not-at-top

  img = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float64)
  pts, _ = cv2.projectPoints(BOX_POINTS, np.asarray(rot, np.float64).reshape(3, 1),
                             np.asarray(trans, np.float64).reshape(3, 1), CAMERA, np.zeros((4, 1)))
  p = np.int32(pts.reshape(-1, 2))
  color = (255, 255, 255)
  cv2.polylines(img, [p], True, color, 2, cv2.LINE_AA)
  for a, b in ((1, 6), (2, 7), (3, 8)):
    cv2.line(img, tuple(int(v) for v in p[a]), tuple(int(v) for v in p[b]), color, 2, cv2.LINE_AA)
  return img.astype(np.float32)


def prepare_image(image: np.ndarray) -> np.ndarray:
  """[H,W,3+] uint8 (or float in [0,1]) -> float32 [256,256,3] in [0,1] (cv2 bilinear resize of
  the 8-bit image, then /255, as the original)."""
  import cv2  # pylint: disable=g-import-not-at-top

  image = np.asarray(image)[..., :3]
  if image.dtype != np.uint8:
    image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
  if image.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
    image = cv2.resize(image, (IMAGE_SIZE, IMAGE_SIZE))
  return image.astype(np.float32) / 255.0


def window_keypoints(variables, cfg, image, frames, rot, trans):
  """Yields (first global frame, keypoints dict [n,K,...]) per audio2kp window (step 4)."""
  seq = int(cfg.audio2kp.seq_len)
  t = len(frames)
  windows, starts = feats.sequence_windows(frames, seq)
  for n, s in enumerate(starts):
    rows = np.where(np.arange(s, s + seq) < t, np.arange(s, s + seq), t)
    boxes = np.stack([draw_pose_box(rot[r], trans[r]) for r in rows])
    kp = predict_keypoints(variables, cfg, windows[n][None], image[None],
                                              boxes[None])
    lo, hi = (0 if n == 0 else seq // 4), seq // 4 * 3
    hi = min(hi, t - s)  # stop at the last audio frame
    if hi <= lo:
      continue
    yield s + lo, {k: np.asarray(v[0, lo:hi]) for k, v in kp.items()}


def animate(variables, cfg, image, audio, sample_rate: int = feats.SAMPLE_RATE,
            f0_fn: Callable[[np.ndarray, int], np.ndarray] | None = None,
            render_batch: int = 8) -> dict:
  """Source face image + speech waveform -> {'frames': uint8 [T,256,256,3], 'rotation' [T+1,3],
  'translation' [T+1,3], 'keypoints' [T,K,2], 'fps': 25}. `variables, cfg` from
  `convert.load_audio2head`; `audio` at `sample_rate` (16 kHz like the original)."""
  img = prepare_image(image)
  frames = feats.per_video_frame(feats.audio_features(audio, sample_rate, f0_fn))
  t = len(frames)
  if t == 0:
    raise ValueError("audio shorter than one video frame (40 ms)")
  poses = np.asarray(predict_poses(variables, cfg, img[None], frames[None]))[0]
  rot, trans = a2p.denormalize_pose(poses)
  kp_src = {k: np.asarray(v)
            for k, v in renderer.detect_keypoints(variables, cfg, img[None]).items()}
  out = np.zeros((t, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  kps = np.zeros((t, int(cfg.num_kp), 2), np.float32)
  for first, kp in window_keypoints(variables, cfg, img, frames, rot, trans):
    n = len(kp["value"])
    kps[first: first + n] = kp["value"]
    src = {k: np.repeat(v, render_batch, axis=0) for k, v in kp_src.items()}
    imgs = np.repeat(img[None], render_batch, axis=0)
    for b in range(0, n, render_batch):
      m = min(render_batch, n - b)
      # Fixed batch shape (one compilation): the last batch is padded with its last frame.
      idx = np.minimum(np.arange(b, b + render_batch), b + m - 1)
      drv = {k: v[idx] for k, v in kp.items()}
      pred = np.asarray(renderer.render(variables, cfg, imgs, src, drv)["prediction"])[:m]
      out[first + b: first + b + m] = (pred * 255).astype(np.uint8)
  return {"frames": out, "rotation": rot, "translation": trans, "keypoints": kps, "fps": FPS}
