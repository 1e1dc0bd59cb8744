"""Synthetic identities and the anti-aliased rasteriser of a posed 3-D face.

[ours] An identity fixes the face shape (template proportions), skin / hair / lip / iris /
clothing colours, hair style, moles (texture that moves with the face), a textured static
background, the resting framing in the crop and the voice. ``render_frames`` draws the posed
68-landmark face as filled anti-aliased polygons (OpenCV LINE_AA with 4 bits of sub-pixel
precision): background, torso, hair, neck, face, moles, brows, eyes with irises, nose, lips and
the open-mouth interior with teeth.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from data.synth_talk.speech import Voice
from osmnet_jax.face import geometry as fg

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT


@dataclasses.dataclass(frozen=True)
class Identity:
  shape: dict
  skin: tuple
  hair: tuple
  lips: tuple
  iris: tuple
  clothes: tuple
  hair_top: float        # hair thickness above the forehead (head units)
  hair_length: float     # how far the hair falls at the sides (head units below the temples)
  moles: np.ndarray      # [M, 3] head-frame points on the face surface
  framing: np.ndarray    # resting (tx, ty, scale)
  voice: Voice
  bg_seed: int

  @classmethod
  def sample(cls, rng: np.random.Generator) -> "Identity":
    u = rng.uniform
    shape = dict(
        jaw_width=u(0.66, 0.82), jaw_height=u(0.95, 1.12), jaw_square=u(2.0, 3.2),
        eye_spacing=u(0.29, 0.36), eye_size=u(0.12, 0.16), nose_length=u(0.36, 0.46),
        mouth_width=u(0.22, 0.31), brow_height=u(0.4, 0.47),
    )
    tone = u(0, 1)
    skin = np.array([236, 202, 176]) * (1 - tone) + np.array([112, 76, 56]) * tone
    skin = np.clip(skin + rng.normal(0, 8, 3), 0, 255)
    palette = np.array([[25, 20, 18], [80, 50, 30], [150, 100, 55], [215, 180, 110],
                        [150, 60, 30], [170, 170, 170]])
    hair = np.clip(palette[rng.integers(len(palette))] + rng.normal(0, 10, 3), 0, 255)
    lips = np.clip(0.55 * skin + 0.45 * np.array([190, 70, 80]) + rng.normal(0, 6, 3), 0, 255)
    iris = np.clip(np.array([[60, 40, 25], [70, 110, 150], [80, 110, 60], [30, 25, 20]])
                   [rng.integers(4)] + rng.normal(0, 8, 3), 0, 255)
    clothes = rng.uniform(20, 235, 3)
    n_moles = int(rng.integers(0, 4))
    mx = u(-0.45, 0.45, n_moles)
    my = u(-0.6, 0.5, n_moles)
    mz = 0.35 * np.sqrt(np.clip(1 - (mx / 0.8) ** 2 - (my / 1.1) ** 2, 0.05, 1))
    return cls(
        shape=shape, skin=tuple(skin), hair=tuple(hair), lips=tuple(lips), iris=tuple(iris),
        clothes=tuple(clothes), hair_top=u(0.05, 0.25), hair_length=u(-0.2, 0.9),
        moles=np.stack([mx, my, mz], 1),
        framing=np.array([u(-0.05, 0.05), u(0.02, 0.12), u(0.58, 0.7)]),
        voice=Voice.sample(rng), bg_seed=int(rng.integers(2**31)),
    )


def background(ident: Identity, size: int) -> np.ndarray:
  """Static textured background: a two-colour gradient with soft shapes. uint8 [S, S, 3]."""
  rng = np.random.default_rng(ident.bg_seed)
  c0, c1 = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
  ang = rng.uniform(0, 2 * np.pi)
  yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
  g = np.clip(0.5 + (xx - 0.5) * np.cos(ang) + (yy - 0.5) * np.sin(ang), 0, 1)[..., None]
  img = (c0 * (1 - g) + c1 * g).astype(np.uint8)
  for _ in range(int(rng.integers(3, 8))):
    col = tuple(float(v) for v in rng.uniform(20, 235, 3))
    ctr = tuple(int(v) for v in rng.uniform(0, size, 2) * _ONE)
    if rng.random() < 0.5:
      axes = tuple(int(v) for v in rng.uniform(0.05, 0.25, 2) * size * _ONE)
      cv2.ellipse(img, ctr, axes, float(rng.uniform(0, 180)), 0, 360, col, -1, cv2.LINE_AA, _SHIFT)
    else:
      pts = (rng.uniform(0, size, (4, 2)) * _ONE).astype(np.int32)
      cv2.fillPoly(img, [pts], col, cv2.LINE_AA, _SHIFT)
  return cv2.GaussianBlur(img, (0, 0), max(size / 128, 0.5))


def _arc(rx: float, ry: float, y0: float, z0: float, dz: float, start: float, stop: float, n: int):
  phi = np.linspace(start, stop, n)
  return np.stack([rx * np.cos(phi), y0 + ry * np.sin(phi), z0 + dz * np.sin(phi)], 1)


def scene_points(ident: Identity) -> dict[str, np.ndarray]:
  """Head-frame 3-D outlines that are not landmarks (forehead, hair, neck, moles)."""
  jw = ident.shape["jaw_width"]
  fh = 0.95
  ht, hl = ident.hair_top, ident.hair_length
  hair_out = _arc(jw + 0.08, fh + ht, 0.12, -0.6, 0.3, -np.arcsin(min(hl / (fh + ht), 0.99)),
                  np.pi + np.arcsin(min(hl / (fh + ht), 0.99)), 24)
  fringe = _arc(jw * 0.96, fh * 0.78, 0.12 + fh * 0.12, -0.2, 0.35, np.pi - 0.25, 0.25, 12)
  return {
      "forehead": _arc(jw, fh, 0.12, -0.55, 0.45, 0.0, np.pi, 13)[1:-1],
      "hair": np.concatenate([hair_out, fringe[::-1]]),
      "neck": np.array([[-0.42, -0.55, -0.35], [0.42, -0.55, -0.35],
                        [0.46, -2.2, -0.4], [-0.46, -2.2, -0.4]]),
      "moles": ident.moles,
  }


def _poly(img, pts, color):
  cv2.fillPoly(img, [np.round(pts * _ONE).astype(np.int32)], tuple(float(c) for c in color),
               cv2.LINE_AA, _SHIFT)


def _line(img, pts, color, thickness, closed=False):
  cv2.polylines(img, [np.round(pts * _ONE).astype(np.int32)], closed,
                tuple(float(c) for c in color), max(1, int(round(thickness))), cv2.LINE_AA, _SHIFT)


def _draw_eye(img, eye: np.ndarray, iris_color, lid_color, px: float):
  _poly(img, eye, (242, 240, 232))
  height = np.linalg.norm(eye[[1, 2]].mean(0) - eye[[5, 4]].mean(0))
  if height > 0.35:
    x0, y0 = np.floor(eye.min(0)).astype(int) - 1
    x1, y1 = np.ceil(eye.max(0)).astype(int) + 2
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 > x0 and y1 > y0:
      # Iris: drawn on a copy of the eye's box and kept only inside the eye polygon.
      roi = img[y0:y1, x0:x1].copy()
      mask = np.zeros(roi.shape[:2], np.uint8)
      _poly(mask, eye - [x0, y0], (255,))
      c = eye.mean(0) - [x0, y0]
      r = 0.28 * np.linalg.norm(eye[0] - eye[3])
      cv2.circle(roi, tuple(int(v) for v in c * _ONE), int(r * _ONE),
                 tuple(float(v) for v in iris_color), -1, cv2.LINE_AA, _SHIFT)
      cv2.circle(roi, tuple(int(v) for v in c * _ONE), int(0.45 * r * _ONE), (15, 15, 15), -1,
                 cv2.LINE_AA, _SHIFT)
      a = mask[..., None].astype(np.float32) / 255.0
      img[y0:y1, x0:x1] = (roi * a + img[y0:y1, x0:x1] * (1 - a)).astype(np.uint8)
  _line(img, eye[[0, 1, 2, 3]], lid_color, 0.9 * px)


def render_frames(
    ident: Identity,
    pose: np.ndarray,
    mouth_open: np.ndarray,
    mouth_round: np.ndarray,
    blink: np.ndarray,
    size: int,
    bg: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Draw a clip.

  Args:
    ident: the identity.
    pose: [T, 6] per-frame head pose (face/geometry.py convention).
    mouth_open, mouth_round, blink: [T] expression tracks in [0, 1].
    size: output size in pixels (square).
    bg: precomputed ``background(ident, size)``.

  Returns:
    (frames uint8 [T, size, size, 3], landmarks float32 [T, 68, 2] pixel coordinates).
  """
  t_len = len(pose)
  base = fg.template(**ident.shape)
  lm3d = np.stack([fg.deform(base, mouth_open[t], mouth_round[t], blink[t]) for t in range(t_len)])
  lm2d, _ = fg.project(lm3d, pose, size)
  extra = scene_points(ident)
  names = list(extra)
  allx = np.concatenate([extra[k] for k in names])
  proj, _ = fg.project(allx[None], pose, size)
  offs = np.cumsum([0] + [len(extra[k]) for k in names])
  ex2d = {k: proj[:, offs[i]:offs[i + 1]] for i, k in enumerate(names)}
  # Torso follows the head's translation only (shoulders do not yaw/nod with the head).
  still = pose.copy()
  still[:, :3] = 0.0
  torso3d = np.array([[-1.6, -1.45, -0.5], [-0.9, -1.05, -0.5], [0.9, -1.05, -0.5],
                      [1.6, -1.45, -0.5], [2.0, -3.0, -0.5], [-2.0, -3.0, -0.5]])
  torso2d, _ = fg.project(torso3d[None], still, size)

  bg = background(ident, size) if bg is None else bg
  px = size / 64.0  # stroke widths scale with resolution
  skin = np.asarray(ident.skin)
  frames = np.empty((t_len, size, size, 3), np.uint8)
  for t in range(t_len):
    img = bg.copy()
    lm = lm2d[t]
    _poly(img, torso2d[t], ident.clothes)
    _poly(img, ex2d["neck"][t], skin * 0.82)
    _poly(img, ex2d["hair"][t][:24], ident.hair)
    _poly(img, np.concatenate([lm[fg.JAW], ex2d["forehead"][t]]), skin)
    _poly(img, ex2d["hair"][t][24:].tolist() and np.concatenate(
        [ex2d["hair"][t][24:], ex2d["hair"][t][[20, 12, 4]]]), ident.hair)
    for m in ex2d["moles"][t]:
      cv2.circle(img, tuple(int(v) for v in m * _ONE), int(0.7 * px * _ONE), tuple(skin * 0.45),
                 -1, cv2.LINE_AA, _SHIFT)
    brow_col = np.asarray(ident.hair) * 0.8
    _line(img, lm[fg.LEFT_BROW], brow_col, 1.6 * px)
    _line(img, lm[fg.RIGHT_BROW], brow_col, 1.6 * px)
    lid = skin * 0.35
    _draw_eye(img, lm[fg.LEFT_EYE], ident.iris, lid, px)
    _draw_eye(img, lm[fg.RIGHT_EYE], ident.iris, lid, px)
    _line(img, lm[fg.NOSE_BRIDGE], skin * 0.78, 0.9 * px)
    _poly(img, np.concatenate([lm[[31]], lm[[30]], lm[[35]], lm[[34, 33, 32]]]), skin * 0.9)
    _line(img, lm[fg.NOSE_BOTTOM], skin * 0.55, 0.8 * px)
    _poly(img, lm[fg.OUTER_LIPS], ident.lips)
    inner = lm[fg.INNER_LIPS]
    _poly(img, inner, (70, 22, 30))
    if mouth_open[t] > 0.08:
      # Teeth: the upper third of the opening.
      top = inner[[0, 1, 2, 3, 4]]
      bottom = inner[[0, 7, 6, 5, 4]]
      teeth = np.concatenate([top, (top + (bottom - top) * 0.3)[::-1]])
      _poly(img, teeth, (236, 232, 220))
    _line(img, inner, np.asarray(ident.lips) * 0.6, 0.7 * px, closed=True)
    frames[t] = img
  return frames, lm2d.astype(np.float32)
