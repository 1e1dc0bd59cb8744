"""OSM-Net head-motion model: an orthonormal clip-level motion space and an audio mapper.

[paper] OSM-Net represents a clip of head motion in a space spanned by learnable *motion bases*
and maps the clip's audio to a point in that space; sampling around the mapped point gives many
different, plausible motions for one audio (one-to-many). The paper body is not available, so
the realisation below is [ours] (LIA-style, DESIGN.md §3 stage B), every size configurable:

  * ``MotionSpace``: a learnable W [D x M]; the bases Q = qr(W) [D x M] are orthonormal BY
    CONSTRUCTION (Q^T Q = I for any W), with the QR sign ambiguity fixed (diag(R) > 0) so Q is a
    smooth function of W. A clip encoder maps a pose clip [B, T, 6] to coefficients alpha [B, M];
    the motion code is Q alpha [B, D]; a decoder maps (Q alpha, per-frame audio rhythm features
    [B, T, R]) back to the pose clip [B, T, 6].
  * ``AudioToMotion``: clip audio features [B, T, A] (+ an optional source identity feature)
    -> alpha_hat [B, M].
  * ``OSMNetMotion``: the two plus the shared ``AudioEncoder`` and an optional identity encoder;
    its methods are what the training stage and the sampler call.

Poses are in the dataset's normalised units ((pose - mean) / std, train statistics), so the
neutral head is the zero pose. Layouts: time-major per clip, channels last.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from osmnet_jax.models.audio_encoder import AudioEncoder

POSE_DIM = 6  # yaw, pitch, roll, tx, ty, scale


def orthonormal_bases(w: jnp.ndarray) -> jnp.ndarray:
  """Q of the QR decomposition of ``w`` [D, M] (D >= M) with diag(R) > 0: Q^T Q = I_M.

  ``jnp.linalg.qr`` fixes Q only up to the sign of each column; multiplying column k by
  sign(R_kk) picks the unique factorisation with a positive diagonal, which is a smooth
  (differentiable) function of W wherever W has full column rank.
  """
  q, r = jnp.linalg.qr(w, mode="reduced")  # [D, M], [M, M]
  s = jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(q.dtype)
  return q * s[None, :]


class TemporalBlock(nn.Module):
  """Residual 1-D conv over time: [B, T, C] -> [B, T, C] (``dtype``: compute dtype)."""

  kernel: int = 5
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    conv = lambda: nn.Conv(x.shape[-1], (self.kernel,), padding="SAME", dtype=self.dtype)
    norm = lambda: nn.LayerNorm(dtype=self.dtype)
    h = conv()(nn.gelu(norm()(x)))
    h = conv()(nn.gelu(norm()(h)))
    return x + h


class MotionSpace(nn.Module):
  """Clip encoder, orthonormal motion bases and clip decoder.

  Attributes:
    num_frames: clip length T (the decoder's time embedding is learned per position).
    num_bases: M, the number of motion bases (coefficients per clip).
    motion_dim: D, the size of the motion code Q alpha (D >= M).
    hidden: width of the temporal conv stacks.
    depth: temporal blocks in the encoder and in the decoder.
    encoder: "conv" (temporal convs, then a dense layer over the flattened [T*H] features) or
      "linear" (one dense layer over the flattened [T*6] pose clip) [ours]. The conv encoder
      fits a small training set's clips far better than unseen ones, which shrinks the spread
      of decoded unseen motions; the linear one generalises like PCA (BENCHMARKS.md).
    decoder_skip: add a linear map of the motion code to the pose clip, Dense(Q alpha) ->
      [T, 6], to the conv decoder's output [ours], so the clip-level motion does not have to
      pass through the per-frame conv stack.
    dtype: compute dtype of the encoder and decoder layers (None: float32). The bases
      (QR of W), the coefficients alpha and the decoded pose stay float32.
  """

  num_frames: int = 32
  num_bases: int = 8
  motion_dim: int = 64
  hidden: int = 64
  depth: int = 2
  encoder: str = "conv"
  decoder_skip: bool = False
  dtype: Any = None

  def setup(self):
    if self.motion_dim < self.num_bases:
      raise ValueError(f"motion_dim={self.motion_dim} must be >= num_bases={self.num_bases}")
    if self.encoder not in ("conv", "linear"):
      raise ValueError(f"encoder={self.encoder!r}: use 'conv' or 'linear'")
    self.w = self.param("w", nn.initializers.normal(1.0), (self.motion_dim, self.num_bases))
    # Clip encoder: pose [B,T,6] -> alpha [B,M].
    dt = self.dtype
    # The layers that end in alpha or the pose compute in float32 (small; keeps the outputs
    # exact enough for the losses and the QR); the rest in ``dtype``.
    if self.encoder == "linear":
      self.enc_linear = nn.Dense(self.num_bases)
    else:
      self.enc_in = nn.Dense(self.hidden, dtype=dt)
      self.enc_pos = self.param("enc_pos", nn.initializers.normal(0.02),
                                (self.num_frames, self.hidden))
      self.enc_blocks = [TemporalBlock(dtype=dt) for _ in range(self.depth)]
      self.enc_norm = nn.LayerNorm(dtype=dt)
      self.enc_mid = nn.Dense(self.hidden, dtype=dt)
      self.enc_out = nn.Dense(self.num_bases)
    # Decoder: (Q alpha [B,D], rhythm [B,T,R]) -> pose [B,T,6].
    self.dec_code = nn.Dense(self.hidden, dtype=dt)
    self.dec_rhythm = nn.Dense(self.hidden, dtype=dt)
    self.dec_pos = self.param("dec_pos", nn.initializers.normal(0.02),
                              (self.num_frames, self.hidden))
    self.dec_blocks = [TemporalBlock(dtype=dt) for _ in range(self.depth)]
    self.dec_norm = nn.LayerNorm(dtype=dt)
    self.dec_out = nn.Dense(POSE_DIM)
    if self.decoder_skip:
      self.dec_linear = nn.Dense(self.num_frames * POSE_DIM)

  def bases(self) -> jnp.ndarray:
    """Q [D, M], orthonormal columns."""
    return orthonormal_bases(self.w)

  def encode(self, pose: jnp.ndarray) -> jnp.ndarray:
    """pose [B, T, 6] -> alpha [B, M]."""
    self._check_t(pose)
    if self.encoder == "linear":
      return self.enc_linear(pose.reshape(pose.shape[0], -1))  # [B, T*6] -> [B, M]
    x = self.enc_in(pose) + self.enc_pos  # [B,T,H]
    for blk in self.enc_blocks:
      x = blk(x)
    x = nn.gelu(self.enc_norm(x)).reshape(x.shape[0], -1)  # [B, T*H]: keeps the time layout
    return self.enc_out(nn.gelu(self.enc_mid(x)))

  def code(self, alpha: jnp.ndarray) -> jnp.ndarray:
    """alpha [B, M] -> motion code Q alpha [B, D]."""
    return alpha @ self.bases().T

  def decode(self, alpha: jnp.ndarray, rhythm: jnp.ndarray) -> jnp.ndarray:
    """(alpha [B, M], rhythm [B, T, R]) -> pose [B, T, 6]."""
    self._check_t(rhythm)
    code = self.code(alpha)  # [B,D]
    z = self.dec_code(code)[:, None, :]  # [B,1,H], broadcast over time
    x = z + self.dec_rhythm(rhythm) + self.dec_pos  # [B,T,H]
    for blk in self.dec_blocks:
      x = blk(x)
    pose = self.dec_out(nn.gelu(self.dec_norm(x)))  # [B,T,6]
    if self.decoder_skip:
      pose = pose + self.dec_linear(code).reshape(pose.shape)
    return pose

  def __call__(self, pose, rhythm):
    alpha = self.encode(pose)
    return alpha, self.decode(alpha, rhythm)

  def _check_t(self, x):
    if x.shape[-2] != self.num_frames:
      raise ValueError(f"MotionSpace(num_frames={self.num_frames}) got a clip of "
                       f"{x.shape[-2]} frames; longer audio goes through motion_sampling")


class ImageIdentityEncoder(nn.Module):
  """Source identity feature from the image only ([ours], optional): uint8 [B,H,W,3] -> [B, F].

  A small strided conv stack with global mean pooling; any resolution. (The expression stage's
  ``expression.FaceIdentityEncoder`` also reads landmarks and ends in a LayerNorm.)
  """

  features: int = 32
  channels: Sequence[int] = (16, 32, 64)
  dtype: Any = None

  @nn.compact
  def __call__(self, image):
    x = image.astype(jnp.float32) / 127.5 - 1.0
    for c in self.channels:
      x = nn.Conv(c, (3, 3), strides=(2, 2), padding="SAME", dtype=self.dtype)(x)
      x = nn.gelu(nn.LayerNorm(dtype=self.dtype)(x))
    return nn.Dense(self.features, dtype=self.dtype)(x.mean(axis=(1, 2)))


class AudioToMotion(nn.Module):
  """Clip audio features [B, T, A] (+ identity [B, F]) -> alpha_hat [B, M]."""

  num_bases: int = 8
  hidden: int = 64
  depth: int = 2
  dtype: Any = None  # compute dtype; the last layer (alpha_hat) is float32

  @nn.compact
  def __call__(self, audio_feats, identity=None):
    x = nn.Dense(self.hidden, dtype=self.dtype)(audio_feats)  # [B,T,H]
    for _ in range(self.depth):
      x = TemporalBlock(dtype=self.dtype)(x)
    x = nn.gelu(nn.LayerNorm(dtype=self.dtype)(x)).reshape(x.shape[0], -1)  # [B, T*H]
    if identity is not None:
      x = jnp.concatenate([x, identity.astype(x.dtype)], axis=-1)
    x = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype)(x))
    return nn.Dense(self.num_bases)(x)


class OSMNetMotion(nn.Module):
  """Audio encoder + motion space + audio-to-motion mapper (+ identity encoder).

  Attributes:
    num_frames, num_bases, motion_dim, hidden, depth: see ``MotionSpace``.
    audio_dim, audio_channels: the shared ``AudioEncoder``'s feature size and conv widths.
    rhythm_dim: per-frame audio rhythm feature fed to the decoder (a projection of the content
      feature, [ours]).
    identity: "none" or "image" (a conv encoder of the source image feeds the mapper) [ours].
    encoder, decoder_skip: see ``MotionSpace``.
    dtype: compute dtype (None: float32; bfloat16 on accelerators). Params, the bases, alpha,
      alpha_hat and the decoded pose are float32 (see ``MotionSpace``).
    remat: recompute the audio encoder in the backward pass instead of storing its
      activations (the largest of the step: one [T*B, 10, 40, C] map per conv stage).
  """

  num_frames: int = 32
  num_bases: int = 8
  motion_dim: int = 64
  hidden: int = 64
  depth: int = 2
  audio_dim: int = 64
  audio_channels: Sequence[int] = (16, 32, 64)
  rhythm_dim: int = 16
  identity: str = "none"
  encoder: str = "conv"
  decoder_skip: bool = False
  dtype: Any = None
  remat: bool = False

  def setup(self):
    if self.identity not in ("none", "image"):
      raise ValueError(f"identity={self.identity!r}: use 'none' or 'image'")
    # nn.remat keeps the scope name (the attribute), so params and checkpoints do not change.
    # static_argnums counts self as 0: `train` (a Python bool) stays static.
    enc = nn.remat(AudioEncoder, static_argnums=(2,)) if self.remat else AudioEncoder
    self.audio_encoder = enc(features=self.audio_dim, channels=self.audio_channels,
                             dtype=self.dtype)
    self.rhythm = nn.Dense(self.rhythm_dim, dtype=self.dtype)
    self.space = MotionSpace(self.num_frames, self.num_bases, self.motion_dim, self.hidden,
                             self.depth, self.encoder, self.decoder_skip, dtype=self.dtype)
    self.mapper = AudioToMotion(self.num_bases, self.hidden, self.depth, dtype=self.dtype)
    if self.identity == "image":
      self.identity_encoder = ImageIdentityEncoder(dtype=self.dtype)

  def audio_features(self, mel, train: bool = False):
    """mel windows [B, T, 20, 80] -> (content [B, T, A], rhythm [B, T, R])."""
    feats = self.audio_encoder(mel, train)
    return feats, self.rhythm(feats)

  def map_audio(self, feats, source=None):
    """content features [B, T, A] (+ source image) -> alpha_hat [B, M]."""
    ident = None
    if self.identity == "image":
      if source is None:
        raise ValueError("identity='image' needs the source image")
      ident = self.identity_encoder(source)
    return self.mapper(feats, ident)

  def encode(self, pose):
    return self.space.encode(pose)

  def decode(self, alpha, rhythm):
    return self.space.decode(alpha, rhythm)

  def bases(self):
    return self.space.bases()

  def __call__(self, mel, pose, source=None, train: bool = False):
    """Training forward: {'alpha', 'alpha_hat', 'recon', 'rhythm', 'feats'}."""
    feats, rhythm = self.audio_features(mel, train)
    alpha = self.encode(pose)
    return {"alpha": alpha, "alpha_hat": self.map_audio(feats, source),
            "recon": self.decode(alpha, rhythm), "rhythm": rhythm, "feats": feats}

  def sample(self, mel, source, delta):
    """Inference on T-frame clips: pose [B, T, 6] from alpha_hat + delta [B, M]."""
    feats, rhythm = self.audio_features(mel)
    return self.decode(self.map_audio(feats, source) + delta, rhythm)


def init_variables(model: OSMNetMotion, rng: jax.Array, image_size: int = 32) -> dict:
  """Parameters for a batch of one clip (shapes only depend on the config)."""
  t = model.num_frames
  mel = jnp.zeros((1, t, 20, 80), jnp.float32)
  pose = jnp.zeros((1, t, POSE_DIM), jnp.float32)
  source = jnp.zeros((1, image_size, image_size, 3), jnp.uint8)
  return model.init(rng, mel, pose, source if model.identity == "image" else None)
