"""Renderer losses that tie FOMM's unsupervised motion to the dataset's 68 landmarks [ours].

FOMM learns its keypoints without labels. Trained briefly and small, its keypoints settle on
whatever lowers the reconstruction loss fastest and the dense flow barely moves the head: the
rendered head turns at a fraction of the asked rotation and open mouths come out closed
(BENCHMARKS.md "Renderer: motion that reaches the pixels"). Every dataset here carries 68
landmarks per frame, so optional terms use them (all off in the FOMM configs):

  keypoint_anchor  L1 between keypoint k and landmark ``anchor_landmarks[k]`` (source and
                   driving): keypoints that move with the eyes, nose, jaw and lips.
  keypoint_motion  L1 between each anchored keypoint's motion (driving - source) and its
                   landmark's motion: the anchor alone is met by a detector that stays near the
                   average face (measured: keypoints turned 0.39x of the landmarks' roll), since
                   a frame's motion is about as large as the per-face anchor error; this term
                   asks for the motion itself and ignores a per-face offset.
  flow_anchor      L1 between the dense flow sampled at the driving frame's landmarks and the
                   source frame's landmarks: the flow itself must carry each landmark back to
                   where it is in the source (a sparse, direct flow target).
  mouth            L1 of the prediction on the driving frame's mouth box: the mouth is ~2 % of
                   a frame, so the full-frame losses hardly see an open mouth rendered closed.
  mask_background  -log(1 - w_bg) of the dense-motion mask's background (identity) weight w_bg
                   at the driving landmarks: in short runs the mask can lock onto the identity
                   motion over the face early, while the keypoint motions are still noise, and
                   never leave (measured: w_bg 0.65-0.79 at the landmarks in stalled runs, 0.01-
                   0.02 in runs whose flow moves; the keypoint motions carried the landmarks'
                   motion equally well in both). The log keeps the gradient on the background
                   logit (= w_bg) from vanishing as the softmax saturates.
  mask_anchor      -log w_k of the dense-motion mask's weight on keypoint k's motion at the
                   driving frame's landmark ``anchor_landmarks[k]``: the flow at a landmark is
                   that of the keypoint anchored to it. The keypoints can follow the lips while
                   the mask blends other keypoints' motions over the mouth, so no opening reaches
                   the flow (measured: in a run that lost the mouth the lip keypoints followed
                   the true opening at r 0.95 but held 0.00 of the mask at the inner lips, and
                   the flow carried 0.02x of the opening; 0.89 and r 0.96 in one that kept it).
  heatmap_peak     mean of max(0, sigma_k - floor) over the anchored keypoints, sigma_k the
                   spatial standard deviation (heatmap cells) of keypoint k's heatmap. A keypoint
                   whose heatmap stays diffuse is a soft-argmax over half the face: it barely
                   moves (measured: heatmap sigma 11-21 px went with keypoint motions of
                   -0.2-0.3x their landmarks', and one seed of the default lost most of its
                   keypoints this way). The floor keeps a peak a few cells wide, so the
                   expectation still interpolates between cells (sub-pixel keypoints). It needs
                   no landmarks, only the number of anchored keypoints.
  heatmap_anchor   KL divergence from a Gaussian (std ``heatmap_anchor_sigma`` cells) at landmark
                   ``anchor_landmarks[k]`` to keypoint k's heatmap (source and driving): the
                   anchor asked of the whole heatmap, not of its mean. keypoint_anchor acts
                   through the soft-argmax, whose gradient reaches only the cells the heatmap
                   already covers: a heatmap peaked on the wrong feature is stuck there
                   (measured: with heatmap_peak 5 every heatmap was 2-4 px wide, yet keypoints
                   sat 4-10 px from their landmarks and the lower-lip one moved against its
                   landmark). The KL's gradient on the logits is p - target, which is not 0 at
                   the landmark however far away the peak is.

Coordinates: landmarks are pixels (x, y) with pixel j at j; keypoints and flows are FOMM's
normalised (x, y) with pixel j at 2 j / (S - 1) - 1 (``nn.keypoints.make_coordinate_grid``).
"""

import jax
import jax.numpy as jnp

from osmnet_jax.face.geometry import OUTER_LIPS  # iBUG-68 outer lip contour, 48-59
from osmnet_jax.nn import keypoints as kp_lib
from osmnet_jax.nn.grid_sample import grid_sample


def to_unit(landmarks: jax.Array, size: int) -> jax.Array:
  """Pixel landmarks [..., 2] of an S x S frame -> FOMM's normalised coordinates."""
  return landmarks.astype(jnp.float32) * (2.0 / (size - 1)) - 1.0


def keypoint_anchor_loss(kp_value: jax.Array, landmarks: jax.Array, indices: tuple[int, ...],
                         size: int) -> jax.Array:
  """kp_value [B, K, 2] (normalised), landmarks [B, 68, 2] (pixels) -> mean L1 of the first
  len(indices) keypoints to landmarks[indices]."""
  idx = jnp.asarray(indices)
  target = to_unit(landmarks[:, idx], size)
  return jnp.abs(kp_value[:, :len(indices)].astype(jnp.float32) - target).mean()


def keypoint_motion_loss(kp_src: jax.Array, kp_drv: jax.Array, source_landmarks: jax.Array,
                         driving_landmarks: jax.Array, indices: tuple[int, ...],
                         size: int) -> jax.Array:
  """kp_src, kp_drv [B, K, 2] (normalised), landmarks [B, 68, 2] (pixels) -> mean L1 between
  (kp_drv - kp_src) and (landmarks_drv - landmarks_src) over the first len(indices) keypoints."""
  idx = jnp.asarray(indices)
  n = len(indices)
  moved = (kp_drv[:, :n] - kp_src[:, :n]).astype(jnp.float32)
  target = to_unit(driving_landmarks[:, idx], size) - to_unit(source_landmarks[:, idx], size)
  return jnp.abs(moved - target).mean()


def sample_flow(deformation: jax.Array, points: jax.Array) -> jax.Array:
  """Bilinear lookup of a flow [B, h, w, 2] (its value at grid node (i, j) belongs to the
  normalised point (2 j / (w - 1) - 1, 2 i / (h - 1) - 1)) at points [B, N, 2] -> [B, N, 2].
  Points outside the grid take the border value."""
  _, h, w, _ = deformation.shape
  # Node convention (align_corners=True) -> grid_sample's pixel-edge one (align_corners=False):
  # node j sits at (2 j + 1) / w - 1 there. Clipping to the outer nodes first keeps border
  # padding exactly at the border nodes.
  scale = jnp.array([(w - 1) / w, (h - 1) / h], points.dtype)
  grid = jnp.clip(points, -1.0, 1.0) * scale
  return grid_sample(deformation, grid[:, :, None, :], padding_mode="border")[:, :, 0]


def flow_anchor_loss(deformation: jax.Array, driving_landmarks: jax.Array,
                     source_landmarks: jax.Array, size: int) -> jax.Array:
  """deformation [B, h, w, 2]: for each driving-frame point, where to read the source. Mean L1
  between the flow at the driving landmarks and the source landmarks ([B, 68, 2] pixels)."""
  at = sample_flow(deformation.astype(jnp.float32), to_unit(driving_landmarks, size))
  return jnp.abs(at - to_unit(source_landmarks, size)).mean()


def mask_background_weight(mask: jax.Array, driving_landmarks: jax.Array,
                           size: int) -> jax.Array:
  """mask [B, h, w, K+1] (softmax over motions, index 0 = identity), driving landmarks
  [B, 68, 2] (pixels of an S x S frame) -> the background weight w_bg at each landmark [B, 68]
  (bilinear, like the flow lookup)."""
  return sample_flow(mask.astype(jnp.float32), to_unit(driving_landmarks, size))[..., 0]


def mask_background_loss(mask: jax.Array, driving_landmarks: jax.Array, size: int,
                         eps: float = 1e-4) -> jax.Array:
  """Mean of -log(1 - w_bg) at the driving landmarks (``mask_background_weight``)."""
  w_bg = mask_background_weight(mask, driving_landmarks, size)
  return -jnp.log(jnp.maximum(1.0 - w_bg, eps)).mean()


def mask_anchor_loss(mask: jax.Array, driving_landmarks: jax.Array, indices: tuple[int, ...],
                     size: int, eps: float = 1e-4) -> jax.Array:
  """mask [B, h, w, K+1] (channel 0 the identity, k + 1 keypoint k), driving landmarks
  [B, 68, 2] (pixels) -> mean over the first len(indices) keypoints of -log of channel k + 1
  at landmark indices[k] (bilinear, like the flow lookup)."""
  n = len(indices)
  at = sample_flow(mask.astype(jnp.float32),
                   to_unit(driving_landmarks[:, jnp.asarray(indices)], size))  # [B, n, K+1]
  own = at[:, jnp.arange(n), jnp.arange(n) + 1]                              # [B, n]
  # + eps, not a floor: a weight already near 0 (a mask locked onto other motions) keeps its
  # gradient.
  return -jnp.log(own + eps).mean()


def heatmap_spread(logits: jax.Array, temperature: float) -> jax.Array:
  """The keypoint head's logits [B, h, w, K] -> [B, K]: the spatial standard deviation, in
  heatmap cells, of each keypoint's heatmap (``nn.keypoints.spatial_softmax`` at
  ``temperature``, the detector's own heatmap): sqrt of E|p - E p|^2 over the (x, y) cells."""
  _, h, w, _ = logits.shape
  heat = kp_lib.spatial_softmax(logits.astype(jnp.float32), temperature)
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
  mean_x = jnp.einsum("bhwk,hw->bk", heat, xs)
  mean_y = jnp.einsum("bhwk,hw->bk", heat, ys)
  var = (jnp.einsum("bhwk,hw->bk", heat, xs * xs) - mean_x ** 2
         + jnp.einsum("bhwk,hw->bk", heat, ys * ys) - mean_y ** 2)
  return jnp.sqrt(jnp.maximum(var, 0.0) + 1e-6)


def heatmap_peak_loss(spread: jax.Array, num_anchored: int, floor: float) -> jax.Array:
  """spread [B, K] (``heatmap_spread``) -> mean over the first ``num_anchored`` keypoints of
  max(0, spread - floor)."""
  return jax.nn.relu(spread[:, :num_anchored] - floor).mean()


def heatmap_anchor_loss(logits: jax.Array, landmarks: jax.Array, indices: tuple[int, ...],
                        size: int, temperature: float, sigma_cells: float) -> jax.Array:
  """The keypoint head's logits [B, h, w, K], landmarks [B, 68, 2] (pixels of an S x S frame)
  -> mean over B and the first len(indices) keypoints of KL(target || heatmap), where heatmap is
  the detector's own spatial softmax at ``temperature`` and target a Gaussian on the heatmap's
  coordinate grid (``nn.keypoints.make_coordinate_grid``, the grid the detector's soft-argmax
  uses, so its mean is the point keypoint_anchor asks for) at ``to_unit(landmarks[indices])``
  with std ``sigma_cells`` grid cells. 0 when the heatmap is that Gaussian."""
  _, h, w, _ = logits.shape
  n = len(indices)
  flat = logits[..., :n].astype(jnp.float32).reshape(logits.shape[0], h * w, n) / temperature
  log_p = jax.nn.log_softmax(flat, axis=1)  # [B, h*w, n]
  grid = kp_lib.make_coordinate_grid(h, w).reshape(h * w, 2)  # (x, y) normalised
  centre = to_unit(landmarks[:, jnp.asarray(indices)], size)  # [B, n, 2]
  cell = jnp.array([2.0 / (w - 1), 2.0 / (h - 1)], jnp.float32)  # one cell, normalised
  d = (grid[None, :, None, :] - centre[:, None, :, :]) / (cell * sigma_cells)  # [B, h*w, n, 2]
  log_t = jax.nn.log_softmax(-0.5 * jnp.sum(d * d, -1), axis=1)  # [B, h*w, n], sums to 1
  return jnp.sum(jnp.exp(log_t) * (log_t - log_p), axis=1).mean()


def mouth_mask(landmarks: jax.Array, size: int, margin: float) -> jax.Array:
  """[B, 68, 2] pixel landmarks -> float32 [B, S, S, 1]: 1 inside the outer-lip box grown by
  ``margin`` times its larger side, else 0."""
  lips = landmarks[:, OUTER_LIPS].astype(jnp.float32)  # [B, 12, 2]
  lo, hi = lips.min(1), lips.max(1)  # [B, 2]
  pad = margin * (hi - lo).max(-1, keepdims=True)
  lo, hi = lo - pad, hi + pad
  pix = jnp.arange(size, dtype=jnp.float32)
  in_x = (pix[None, :] >= lo[:, 0:1]) & (pix[None, :] <= hi[:, 0:1])  # [B, S]
  in_y = (pix[None, :] >= lo[:, 1:2]) & (pix[None, :] <= hi[:, 1:2])
  return (in_y[:, :, None] & in_x[:, None, :]).astype(jnp.float32)[..., None]


def mouth_loss(prediction: jax.Array, driving: jax.Array, driving_landmarks: jax.Array,
               margin: float) -> jax.Array:
  """Mean absolute error of prediction vs driving [B, S, S, C] over the driving mouth box."""
  mask = mouth_mask(driving_landmarks, driving.shape[1], margin)
  err = jnp.abs(prediction.astype(jnp.float32) - driving.astype(jnp.float32)) * mask
  return err.sum() / jnp.maximum(mask.sum() * driving.shape[-1], 1.0)
