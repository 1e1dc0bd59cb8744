"""ExpressionEncoder: per-frame audio content + source identity -> expression feature (+ landmarks).

OSM-Net stage B, expression half [paper: expression feature from audio and the source identity,
constrained by a landmark loss]. Everything below that the paper body does not fix is [ours] and
configurable through the module attributes (the stage maps ``cfg.expression`` onto them):

    enc = ExpressionEncoder(...)
    out = enc.apply({'params': p}, mel, source, source_landmarks, pose, train=True)
    # mel [B,T,20,80] log-mel windows, source uint8/float [B,H,W,3], source_landmarks [B,68,2]
    # in [-1,1] crop coords, pose [B,T,6] normalised (or None when use_pose=False)
    out['expression']  [B,T,E]   per-frame expression feature (the KeypointPredictor's input)
    out['identity']    [B,I]     source identity feature
    out['landmarks']   [B,T,68,2] decoded landmarks in [-1,1] crop coords

Architecture [ours]:
  * audio: ``AudioEncoder`` over each frame's 20x80 mel window -> [B,T,A];
  * identity: a small strided conv encoder of the source image (LayerNorm, mean-pooled) and/or an
    MLP of the source landmarks (centred, so it sees the face *shape*, not where it sits) ->
    [B,I] (``identity`` = 'image' | 'landmarks' | 'image+landmarks');
  * temporal model: Dense(audio_t ++ identity) then ``temporal_layers`` pre-LN residual 1-D convs
    over T (kernel ``temporal_kernel``, SAME padding) -> [B,T,E]. Convolution over the window lets
    co-articulation (neighbouring frames' audio) shape each frame's expression;
  * landmark head: MLP(expression_t ++ identity [++ pose_t]) -> 136 numbers, added to the source
    landmarks (``residual=True``; the last layer starts at zero so the initial prediction is the
    source face). ``use_pose`` (default True) also feeds the frame's normalised head pose: the
    target landmarks carry the head motion, which audio cannot predict (in synth_talk it is random
    given the audio), so without the pose the L1 would be dominated by motion and push the
    expression feature to guess poses. At generation time the pose comes from the motion stage.

No batch statistics anywhere (LayerNorm only): the stage step is params + optimizer only, and jit
over a mesh and pmap give identical updates.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from osmnet_jax.face import geometry as fg
from osmnet_jax.models.audio_encoder import AudioEncoder
from osmnet_jax.nn import precision

IDENTITY_MODES = ("image", "landmarks", "image+landmarks")


# ----------------------------------------------------------------------------------------------
# Landmark coordinates and the landmark loss.

def normalise_landmarks(pixels: jax.Array, size: int) -> jax.Array:
  """Pixel coords of a square crop (pixel centres at integers, align_corners=False) -> [-1, 1].

  Inverse of face_geometry.project's ``p = (n + 1) * size / 2 - 0.5``.
  """
  return (pixels + 0.5) * (2.0 / size) - 1.0


def denormalise_landmarks(norm: jax.Array, size: int) -> jax.Array:
  """[-1, 1] crop coords -> pixel coords (see ``normalise_landmarks``)."""
  return (norm + 1.0) * (size / 2.0) - 0.5


def landmark_weights(mouth_weight: float, dtype=jnp.float32) -> jax.Array:
  """Per-landmark weights [68]: 1, and ``mouth_weight`` on iBUG 48-67 [ours: the value]."""
  w = np.ones((fg.NUM_LANDMARKS,), np.float64)
  w[fg.MOUTH] = mouth_weight
  return jnp.asarray(w, dtype)


def landmark_loss(pred: jax.Array, target: jax.Array, mouth_weight: float = 5.0) -> jax.Array:
  """Mouth-weighted L1 [paper: landmark constraint; weighting ours].

  pred, target [..., 68, 2] (same units, e.g. [-1,1] crop coords) -> scalar
      sum_j w_j * (|dx_j| + |dy_j|) / (2 * sum_j w_j), averaged over the leading dims,
  i.e. a weighted mean absolute error: with every weight 1 it is the plain mean L1, and a
  uniform error e on the mouth alone gives e * 20 * m / (48 + 20 * m) for mouth weight m.
  """
  w = landmark_weights(mouth_weight, pred.dtype)  # [68]
  per_point = jnp.abs(pred - target).sum(-1)  # [..., 68]
  return jnp.mean((per_point * w).sum(-1) / (2.0 * w.sum()))


# ----------------------------------------------------------------------------------------------
# Modules.

class FaceIdentityEncoder(nn.Module):
  """Source image and/or landmarks -> identity feature [B, I] [ours]. (The motion stage's
  ``motion_space.ImageIdentityEncoder`` reads the image only.)"""

  features: int = 64
  channels: Sequence[int] = (16, 32, 64)
  mode: str = "image+landmarks"
  dtype: Any = None  # compute dtype (None: float32); the output LayerNorm is float32

  @nn.compact
  def __call__(self, source: jax.Array | None, source_landmarks: jax.Array | None) -> jax.Array:
    if self.mode not in IDENTITY_MODES:
      raise ValueError(f"identity={self.mode!r}: use one of {IDENTITY_MODES}")
    parts = []
    if "image" in self.mode:
      x = source
      if x.dtype == jnp.uint8:
        x = x.astype(jnp.float32) / 255.0
      x = x * 2.0 - 1.0  # [B,H,W,3] in [-1,1]
      for c in self.channels:
        x = nn.Conv(c, (3, 3), strides=(2, 2), padding="SAME", dtype=self.dtype)(x)  # H/2, W/2
        x = nn.LayerNorm(dtype=self.dtype)(x)
        x = nn.gelu(x)
      parts.append(x.mean(axis=(1, 2)))  # [B, C] global average: appearance, not position
    if "landmarks" in self.mode:
      lm = source_landmarks - source_landmarks.mean(-2, keepdims=True)  # [B,68,2] centred: shape
      h = nn.gelu(nn.Dense(self.features, dtype=self.dtype)(lm.reshape(lm.shape[0], -1)))
      parts.append(h)
    x = nn.Dense(self.features, dtype=self.dtype)(jnp.concatenate(parts, -1))  # promotes
    return nn.LayerNorm()(x)  # [B, I]


class TemporalConvBlock(nn.Module):
  """Pre-LN residual 1-D conv over time: [B,T,E] -> [B,T,E] [ours]. ``dtype``: compute dtype
  of the branch; the residual stream keeps x's dtype."""

  kernel: int = 3
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.LayerNorm(dtype=self.dtype)(x)
    h = nn.Conv(x.shape[-1], (self.kernel,), padding="SAME", dtype=self.dtype)(h)  # neighbours
    h = nn.gelu(h)
    h = nn.Dense(x.shape[-1], dtype=self.dtype)(h)
    return x + h.astype(x.dtype)


class LandmarkHead(nn.Module):
  """(expression [B,T,E], identity [B,I], source landmarks [B,68,2], pose [B,T,6] | None)
  -> landmarks [B,T,68,2] in [-1,1] crop coords [paper: landmark decoder; layout ours]."""

  hidden: int = 128
  depth: int = 2
  residual: bool = True
  dtype: Any = None  # compute dtype of the hidden layers; the output layer is float32

  @nn.compact
  def __call__(self, expression, identity, source_landmarks, pose=None):
    b, t, _ = expression.shape
    parts = [expression, jnp.broadcast_to(identity[:, None], (b, t, identity.shape[-1]))]
    if pose is not None:
      parts.append(pose)
    h = jnp.concatenate(parts, -1)  # [B,T,E+I(+6)]: every frame decoded independently
    for _ in range(self.depth):
      h = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype)(h))
    # Zero-initialised output: the first prediction is the source face (residual) or the centre.
    out = nn.Dense(2 * fg.NUM_LANDMARKS, kernel_init=nn.initializers.zeros,
                   bias_init=nn.initializers.zeros, name="out")(h)
    out = out.reshape(b, t, fg.NUM_LANDMARKS, 2)
    if self.residual:
      out = out + source_landmarks[:, None]
    return out


class ExpressionEncoder(nn.Module):
  """Audio window + source identity -> per-frame expression feature and decoded landmarks.

  Attributes ([ours] unless said):
    expression_dim: E.
    audio_dim, audio_channels: the AudioEncoder (features A, conv widths).
    identity: 'image' | 'landmarks' | 'image+landmarks' identity inputs.
    identity_dim, identity_channels: the FaceIdentityEncoder (features I, conv widths).
    temporal_layers, temporal_kernel: residual 1-D convs over the T frames of the window.
    landmark_head: decode landmarks [paper: landmark constraint] (False: expression only).
    landmark_hidden, landmark_depth, landmark_residual, use_pose: the LandmarkHead.
    dtype: compute dtype (None: float32; bfloat16 on accelerators). Params, the expression
      feature (out_norm) and the landmarks are float32.
    remat: recompute the audio encoder (the largest activations: [B*T, 10, 40, C] per stage)
      in the backward pass instead of storing them.
  """

  expression_dim: int = 64
  audio_dim: int = 64
  audio_channels: Sequence[int] = (8, 16, 32)
  identity: str = "image+landmarks"
  identity_dim: int = 64
  identity_channels: Sequence[int] = (16, 32, 64)
  temporal_layers: int = 2
  temporal_kernel: int = 3
  landmark_head: bool = True
  landmark_hidden: int = 128
  landmark_depth: int = 2
  landmark_residual: bool = True
  use_pose: bool = True
  dtype: Any = None
  remat: bool = False

  def setup(self):
    dt = self.dtype
    # nn.remat keeps the scope name, so params and checkpoints do not change; `train` static.
    audio = nn.remat(AudioEncoder, static_argnums=(2,)) if self.remat else AudioEncoder
    self.audio = audio(features=self.audio_dim, channels=tuple(self.audio_channels), dtype=dt)
    self.identity_encoder = FaceIdentityEncoder(self.identity_dim, tuple(self.identity_channels),
                                                self.identity, dtype=dt)
    self.fuse = nn.Dense(self.expression_dim, dtype=dt)
    self.temporal = [TemporalConvBlock(self.temporal_kernel, dtype=dt)
                     for _ in range(self.temporal_layers)]
    self.out_norm = nn.LayerNorm()  # float32 expression feature
    if self.landmark_head:
      self.landmarks = LandmarkHead(self.landmark_hidden, self.landmark_depth,
                                    self.landmark_residual, dtype=dt)

  def encode(self, mel, source, source_landmarks, train: bool = False):
    """-> (expression [B,T,E], identity [B,I])."""
    audio = self.audio(mel, train)  # [B,T,A]: one content feature per frame's mel window
    ident = self.identity_encoder(source, source_landmarks)  # [B,I]
    b, t, _ = audio.shape
    ident_t = jnp.broadcast_to(ident[:, None], (b, t, ident.shape[-1])).astype(audio.dtype)
    x = jnp.concatenate([audio, ident_t], -1)
    x = self.fuse(x)  # [B,T,E]
    for block in self.temporal:
      x = block(x)
    return self.out_norm(x), ident

  def __call__(self, mel, source, source_landmarks, pose=None, train: bool = False) -> dict:
    expression, ident = self.encode(mel, source, source_landmarks, train)
    out = {"expression": expression, "identity": ident}
    if self.landmark_head:
      if self.use_pose and pose is None:
        raise ValueError("ExpressionEncoder(use_pose=True) needs the pose sequence [B,T,6]")
      out["landmarks"] = self.landmarks(expression, ident, source_landmarks,
                                        pose if self.use_pose else None)
    return out


def from_config(ecfg) -> ExpressionEncoder:
  """cfg.expression (see stages.expression_stage.expression_config) -> ExpressionEncoder."""
  return ExpressionEncoder(
      expression_dim=ecfg.expression_dim, audio_dim=ecfg.audio_dim,
      audio_channels=tuple(ecfg.audio_channels), identity=ecfg.identity,
      identity_dim=ecfg.identity_dim, identity_channels=tuple(ecfg.identity_channels),
      temporal_layers=ecfg.temporal_layers, temporal_kernel=ecfg.temporal_kernel,
      landmark_head=True, landmark_hidden=ecfg.landmark_hidden,
      landmark_depth=ecfg.landmark_depth, landmark_residual=ecfg.landmark_residual,
      use_pose=ecfg.landmark_use_pose, dtype=precision.compute_dtype(ecfg),
      remat=bool(ecfg.get("remat", False)))
