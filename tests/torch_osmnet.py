"""A PyTorch mirror of OSM-Net stage B (motion space + audio mapper; expression encoder + keypoint
predictor on the frozen renderer), for parity tests and the JAX-vs-torch step benchmark.

Mirrors, value for value:
  osmnet_jax/models/audio_encoder.py  AudioEncoder
  osmnet_jax/models/motion_space.py   OSMNetMotion (MotionSpace with the QR bases, AudioToMotion,
                                      ImageIdentityEncoder) and stages/motion.py's osmnet loss
  osmnet_jax/models/expression.py     ExpressionEncoder (+ landmark loss)
  osmnet_jax/models/keypoint_predictor.py KeypointPredictor and predict (both inplane_pose modes)
  osmnet_jax/stages/expression.py     ExpressionStage.loss (w_rec = 0; the frozen KPDetector
                                      is tests/torch_fomm.py's)
Module attribute names equal the Flax submodule names (``Conv_0``, ``enc_blocks_0``, ...), so
``load_flax_params`` is a rename (kernel/scale -> weight) plus transposes. Layouts stay
channels-last like the JAX code ([N,H,W,C], [B,T,C]); convs permute to NCHW only around the
torch conv call (the permuted view is channels_last in memory, which torch's CPU convs take).

Flax details reproduced: LayerNorm eps 1e-6; nn.gelu = tanh approximation; padding "SAME" pads
(total // 2, total - total // 2), which differs from torch's symmetric padding at stride 2.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6  # flax.linen.LayerNorm default (torch: 1e-5)
MOUTH = np.arange(48, 68)  # iBUG mouth points, = face_geometry.MOUTH (checked by the test)
NUM_LANDMARKS = 68
POSE_DIM = 6
MEL_MEAN, MEL_STD = -7.0, 4.5  # audio_encoder.MEL_MEAN / MEL_STD


def gelu(x):
  return F.gelu(x, approximate="tanh")  # flax nn.gelu(approximate=True)


def layer_norm(c):
  return nn.LayerNorm(c, eps=LN_EPS)


def _same_pad(n: int, k: int, s: int) -> tuple[int, int]:
  """XLA "SAME": output ceil(n / s); the extra padding goes to the high side."""
  out = -(-n // s)
  total = max((out - 1) * s + k - n, 0)
  return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
  """flax nn.Conv(c, (k, k), strides, padding='SAME') on NHWC: [N,H,W,Cin] -> [N,H',W',Cout]."""

  def forward(self, x):
    (kh, kw), (sh, sw) = self.kernel_size, self.stride
    ph, pw = _same_pad(x.shape[1], kh, sh), _same_pad(x.shape[2], kw, sw)
    x = F.pad(x.permute(0, 3, 1, 2), (pw[0], pw[1], ph[0], ph[1]))  # (left, right, top, bottom)
    return super().forward(x).permute(0, 2, 3, 1)


class Conv1dSame(nn.Conv1d):
  """flax nn.Conv(c, (k,), padding='SAME') on [B,T,Cin] -> [B,T,Cout] (stride 1)."""

  def forward(self, x):
    p = _same_pad(x.shape[1], self.kernel_size[0], 1)
    return super().forward(F.pad(x.transpose(1, 2), p)).transpose(1, 2)


def _stride2_size(n: int, stages: int) -> int:
  for _ in range(stages):
    n = -(-n // 2)
  return n


# ----------------------------------------------------------------------------------------------
# Shared audio encoder.

class AudioEncoder(nn.Module):
  """mel windows [..., 20, 80] -> [..., features]."""

  def __init__(self, features=64, channels=(16, 32, 64)):
    super().__init__()
    self.channels = tuple(channels)
    cin = 1
    for i, c in enumerate(self.channels):
      setattr(self, f"Conv_{i}", Conv2dSame(cin, c, 3, stride=2))
      setattr(self, f"LayerNorm_{i}", layer_norm(c))
      cin = c
    self.Dense_0 = nn.Linear(_stride2_size(80, len(self.channels)) * cin, features)
    setattr(self, f"LayerNorm_{len(self.channels)}", layer_norm(features))
    self.features = features

  def forward(self, mel):
    lead = mel.shape[:-2]
    x = ((mel.reshape(-1, 20, 80) - MEL_MEAN) / MEL_STD)[..., None]  # [N,20,80,1]
    for i in range(len(self.channels)):
      x = gelu(getattr(self, f"LayerNorm_{i}")(getattr(self, f"Conv_{i}")(x)))
    x = x.mean(1).reshape(x.shape[0], -1)  # [N, W*C]: time pooled, frequency layout kept
    x = getattr(self, f"LayerNorm_{len(self.channels)}")(self.Dense_0(x))
    return x.reshape(*lead, self.features)


# ----------------------------------------------------------------------------------------------
# Motion: MotionSpace, AudioToMotion, ImageIdentityEncoder, OSMNetMotion and the motion loss.

def orthonormal_bases(w):
  """Q of qr(w) [D,M] with diag(R) > 0 (the sign fix makes Q a smooth function of w)."""
  q, r = torch.linalg.qr(w, mode="reduced")
  s = torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(q.dtype)
  return q * s[None, :]


class TemporalBlock(nn.Module):
  """Residual pre-LN 1-D conv pair over time: [B,T,C] -> [B,T,C]."""

  def __init__(self, c, kernel=5):
    super().__init__()
    self.LayerNorm_0, self.Conv_0 = layer_norm(c), Conv1dSame(c, c, kernel)
    self.LayerNorm_1, self.Conv_1 = layer_norm(c), Conv1dSame(c, c, kernel)

  def forward(self, x):
    h = self.Conv_0(gelu(self.LayerNorm_0(x)))
    h = self.Conv_1(gelu(self.LayerNorm_1(h)))
    return x + h


class MotionSpace(nn.Module):
  """``forward`` is the DECODER (so torch.func.functional_call can run it with frozen params,
  as the stage's rec_mapped term needs); ``encode`` is the clip encoder."""

  def __init__(self, num_frames, num_bases, motion_dim, hidden, depth, rhythm_dim,
               encoder="conv", decoder_skip=False):
    super().__init__()
    self.num_frames, self.depth = num_frames, depth
    self.encoder, self.decoder_skip = encoder, decoder_skip
    self.w = nn.Parameter(torch.zeros(motion_dim, num_bases))
    if encoder == "linear":
      self.enc_linear = nn.Linear(num_frames * POSE_DIM, num_bases)
    else:
      self.enc_in = nn.Linear(POSE_DIM, hidden)
      self.enc_pos = nn.Parameter(torch.zeros(num_frames, hidden))
      for i in range(depth):
        setattr(self, f"enc_blocks_{i}", TemporalBlock(hidden))
      self.enc_norm = layer_norm(hidden)
      self.enc_mid = nn.Linear(num_frames * hidden, hidden)
      self.enc_out = nn.Linear(hidden, num_bases)
    self.dec_code = nn.Linear(motion_dim, hidden)
    self.dec_rhythm = nn.Linear(rhythm_dim, hidden)
    self.dec_pos = nn.Parameter(torch.zeros(num_frames, hidden))
    for i in range(depth):
      setattr(self, f"dec_blocks_{i}", TemporalBlock(hidden))
    self.dec_norm = layer_norm(hidden)
    self.dec_out = nn.Linear(hidden, POSE_DIM)
    if decoder_skip:
      self.dec_linear = nn.Linear(motion_dim, num_frames * POSE_DIM)

  def bases(self):
    return orthonormal_bases(self.w)  # [D,M]

  def encode(self, pose):
    """pose [B,T,6] -> alpha [B,M]."""
    if self.encoder == "linear":
      return self.enc_linear(pose.reshape(pose.shape[0], -1))
    x = self.enc_in(pose) + self.enc_pos
    for i in range(self.depth):
      x = getattr(self, f"enc_blocks_{i}")(x)
    x = gelu(self.enc_norm(x)).reshape(x.shape[0], -1)  # [B,T*H]
    return self.enc_out(gelu(self.enc_mid(x)))

  def forward(self, alpha, rhythm):
    """decode: (alpha [B,M], rhythm [B,T,R]) -> pose [B,T,6]."""
    code = alpha @ self.bases().T  # [B,D]
    z = self.dec_code(code)[:, None, :]  # [B,1,H]
    x = z + self.dec_rhythm(rhythm) + self.dec_pos  # [B,T,H]
    for i in range(self.depth):
      x = getattr(self, f"dec_blocks_{i}")(x)
    pose = self.dec_out(gelu(self.dec_norm(x)))
    if self.decoder_skip:
      pose = pose + self.dec_linear(code).reshape(pose.shape)
    return pose


class ImageIdentityEncoder(nn.Module):
  """motion_space.ImageIdentityEncoder: uint8 image [B,H,W,3] -> [B,F]."""

  def __init__(self, features=32, channels=(16, 32, 64)):
    super().__init__()
    self.n = len(channels)
    cin = 3
    for i, c in enumerate(channels):
      setattr(self, f"Conv_{i}", Conv2dSame(cin, c, 3, stride=2))
      setattr(self, f"LayerNorm_{i}", layer_norm(c))
      cin = c
    self.Dense_0 = nn.Linear(cin, features)

  def forward(self, image):
    x = image.to(self.Dense_0.weight.dtype) / 127.5 - 1.0
    for i in range(self.n):
      x = gelu(getattr(self, f"LayerNorm_{i}")(getattr(self, f"Conv_{i}")(x)))
    return self.Dense_0(x.mean((1, 2)))


class AudioToMotion(nn.Module):
  """feats [B,T,A] (+ identity [B,F]) -> alpha_hat [B,M]."""

  def __init__(self, audio_dim, num_frames, num_bases, hidden, depth, identity_dim=0):
    super().__init__()
    self.depth = depth
    self.Dense_0 = nn.Linear(audio_dim, hidden)
    for i in range(depth):
      setattr(self, f"TemporalBlock_{i}", TemporalBlock(hidden))
    self.LayerNorm_0 = layer_norm(hidden)
    self.Dense_1 = nn.Linear(num_frames * hidden + identity_dim, hidden)
    self.Dense_2 = nn.Linear(hidden, num_bases)

  def forward(self, feats, identity=None):
    x = self.Dense_0(feats)
    for i in range(self.depth):
      x = getattr(self, f"TemporalBlock_{i}")(x)
    x = gelu(self.LayerNorm_0(x)).reshape(x.shape[0], -1)  # [B,T*H]
    if identity is not None:
      x = torch.cat([x, identity], -1)
    return self.Dense_2(gelu(self.Dense_1(x)))


class OSMNetMotion(nn.Module):
  def __init__(self, num_frames=32, num_bases=8, motion_dim=64, hidden=64, depth=2, audio_dim=64,
               audio_channels=(16, 32, 64), rhythm_dim=16, identity="none", encoder="conv",
               decoder_skip=False):
    super().__init__()
    self.identity = identity
    self.audio_encoder = AudioEncoder(audio_dim, audio_channels)
    self.rhythm = nn.Linear(audio_dim, rhythm_dim)
    self.space = MotionSpace(num_frames, num_bases, motion_dim, hidden, depth, rhythm_dim,
                             encoder, decoder_skip)
    ident_dim = 32 if identity == "image" else 0  # motion_space.ImageIdentityEncoder() defaults
    self.mapper = AudioToMotion(audio_dim, num_frames, num_bases, hidden, depth, ident_dim)
    if identity == "image":
      self.identity_encoder = ImageIdentityEncoder()

  @classmethod
  def from_config(cls, mcfg):
    """cfg.motion (model='osmnet') -> module, like motion_stage.build_model."""
    return cls(mcfg.num_frames, mcfg.num_bases, mcfg.motion_dim, mcfg.hidden, mcfg.depth,
               mcfg.audio_dim, tuple(mcfg.audio_channels), mcfg.rhythm_dim, mcfg.identity,
               mcfg.encoder, mcfg.decoder_skip)

  def forward(self, mel, pose, source=None):
    feats = self.audio_encoder(mel)  # [B,T,A]
    rhythm = self.rhythm(feats)  # [B,T,R]
    alpha = self.space.encode(pose)
    ident = self.identity_encoder(source) if self.identity == "image" else None
    return {"alpha": alpha, "alpha_hat": self.mapper(feats, ident),
            "recon": self.space(alpha, rhythm), "rhythm": rhythm, "feats": feats}


def motion_loss(model: OSMNetMotion, batch: dict, mcfg):
  """MotionStage.loss for model='osmnet' (single device): (loss, metrics)."""
  pose = batch["pose"]
  out = model(batch["mel"], pose, batch.get("source"))
  rec = (out["recon"] - pose).abs().mean()
  alpha_sg = out["alpha"].detach()
  scale = (alpha_sg ** 2).mean()
  mapped = ((out["alpha_hat"] - alpha_sg) ** 2).mean() / (scale + 1e-6)
  # Decode of alpha_hat with the whole `space` subtree frozen (jax: stop_gradient on
  # params['space']): gradients reach alpha_hat (mapper, audio) and rhythm only.
  frozen = {k: v.detach() for k, v in model.space.named_parameters()}
  pose_m = torch.func.functional_call(model.space, frozen, (out["alpha_hat"], out["rhythm"]))
  rec_m = (pose_m - pose).abs().mean()
  a2 = (out["alpha"] ** 2).mean()
  loss = mcfg.w_rec * rec + mcfg.w_map * mapped + mcfg.w_rec_mapped * rec_m + mcfg.w_alpha * a2
  with torch.no_grad():  # the JAX loss reports it too (same work on both sides)
    q = model.space.bases()
    orth = (q.T @ q - torch.eye(q.shape[1], dtype=q.dtype)).abs().max()
  return loss, {"loss": loss, "rec_l1": rec, "map_mse": mapped, "rec_mapped_l1": rec_m,
                "alpha_rms": a2.sqrt(), "q_orth_err": orth, "out": out, "pose_m": pose_m}


# ----------------------------------------------------------------------------------------------
# Expression: FaceIdentityEncoder, TemporalConvBlock, LandmarkHead, ExpressionEncoder,
# KeypointPredictor and the expression loss.

class FaceIdentityEncoder(nn.Module):
  """expression.FaceIdentityEncoder: source [B,H,W,3] float in [0,1] and/or landmarks -> [B,I]."""

  def __init__(self, features=64, channels=(16, 32, 64), mode="image+landmarks"):
    super().__init__()
    self.mode, self.n = mode, (len(channels) if "image" in mode else 0)
    cin, width, dense = 3, 0, 0
    for i, c in enumerate(channels if "image" in mode else ()):
      setattr(self, f"Conv_{i}", Conv2dSame(cin, c, 3, stride=2))
      setattr(self, f"LayerNorm_{i}", layer_norm(c))
      cin = width = c
    if "landmarks" in mode:
      self.Dense_0 = nn.Linear(2 * NUM_LANDMARKS, features)
      width, dense = width + features, 1
    self.final = f"Dense_{dense}"
    setattr(self, self.final, nn.Linear(width, features))
    setattr(self, f"LayerNorm_{self.n}", layer_norm(features))

  def forward(self, source, source_landmarks):
    parts = []
    if "image" in self.mode:
      x = source * 2.0 - 1.0
      for i in range(self.n):
        x = gelu(getattr(self, f"LayerNorm_{i}")(getattr(self, f"Conv_{i}")(x)))
      parts.append(x.mean((1, 2)))  # [B,C]
    if "landmarks" in self.mode:
      lm = source_landmarks - source_landmarks.mean(-2, keepdim=True)  # [B,68,2] centred
      parts.append(gelu(self.Dense_0(lm.reshape(lm.shape[0], -1))))
    x = getattr(self, self.final)(torch.cat(parts, -1))
    return getattr(self, f"LayerNorm_{self.n}")(x)


class TemporalConvBlock(nn.Module):
  """Pre-LN residual: x + Dense(gelu(Conv1d(LN(x)))) over [B,T,E]."""

  def __init__(self, c, kernel=3):
    super().__init__()
    self.LayerNorm_0 = layer_norm(c)
    self.Conv_0 = Conv1dSame(c, c, kernel)
    self.Dense_0 = nn.Linear(c, c)

  def forward(self, x):
    return x + self.Dense_0(gelu(self.Conv_0(self.LayerNorm_0(x))))


class LandmarkHead(nn.Module):
  def __init__(self, cin, hidden=128, depth=2, residual=True):
    super().__init__()
    self.depth, self.residual = depth, residual
    for i in range(depth):
      setattr(self, f"Dense_{i}", nn.Linear(cin if i == 0 else hidden, hidden))
    self.out = nn.Linear(hidden, 2 * NUM_LANDMARKS)

  def forward(self, expression, identity, source_landmarks, pose=None):
    b, t, _ = expression.shape
    parts = [expression, identity[:, None].expand(b, t, identity.shape[-1])]
    if pose is not None:
      parts.append(pose)
    h = torch.cat(parts, -1)  # [B,T,E+I(+6)]
    for i in range(self.depth):
      h = gelu(getattr(self, f"Dense_{i}")(h))
    out = self.out(h).reshape(b, t, NUM_LANDMARKS, 2)
    return out + source_landmarks[:, None] if self.residual else out


class ExpressionEncoder(nn.Module):
  def __init__(self, ecfg):
    super().__init__()
    c = ecfg
    self.use_pose, self.layers = c.landmark_use_pose, c.temporal_layers
    self.audio = AudioEncoder(c.audio_dim, tuple(c.audio_channels))
    self.identity_encoder = FaceIdentityEncoder(c.identity_dim, tuple(c.identity_channels),
                                                      c.identity)
    self.fuse = nn.Linear(c.audio_dim + c.identity_dim, c.expression_dim)
    for i in range(c.temporal_layers):
      setattr(self, f"temporal_{i}", TemporalConvBlock(c.expression_dim, c.temporal_kernel))
    self.out_norm = layer_norm(c.expression_dim)
    cin = c.expression_dim + c.identity_dim + (POSE_DIM if c.landmark_use_pose else 0)
    self.landmarks = LandmarkHead(cin, c.landmark_hidden, c.landmark_depth, c.landmark_residual)

  def forward(self, mel, source, source_landmarks, pose):
    audio = self.audio(mel)  # [B,T,A]
    ident = self.identity_encoder(source, source_landmarks)  # [B,I]
    b, t, _ = audio.shape
    x = self.fuse(torch.cat([audio, ident[:, None].expand(b, t, ident.shape[-1])], -1))
    for i in range(self.layers):
      x = getattr(self, f"temporal_{i}")(x)
    expression = self.out_norm(x)
    lm = self.landmarks(expression, ident, source_landmarks, pose if self.use_pose else None)
    return {"expression": expression, "identity": ident, "landmarks": lm}


class KeypointPredictor(nn.Module):
  def __init__(self, ecfg, num_kp):
    super().__init__()
    c, h = ecfg, ecfg.kp_hidden
    self.k, self.jacobian = num_kp, c.kp_jacobian
    self.layers, self.depth = c.kp_temporal_layers, c.kp_head_depth
    self.src = nn.Linear(6 * num_kp, h)
    self.frame = nn.Linear(c.expression_dim + POSE_DIM, h)
    for i in range(self.layers):
      setattr(self, f"temporal_{i}", TemporalConvBlock(h, c.temporal_kernel))
    self.norm = layer_norm(h)
    for i in range(self.depth):
      setattr(self, f"head_{i}", nn.Linear(h, h))
    self.out = nn.Linear(h, (6 if c.kp_jacobian else 2) * num_kp)

  def forward(self, kp_src, expression, pose):
    value, jac = kp_src["value"], kp_src["jacobian"]  # [B,K,2], [B,K,2,2]
    b, k = value.shape[:2]
    t = expression.shape[1]
    src_emb = self.src(torch.cat([value.reshape(b, -1), jac.reshape(b, -1)], -1))  # [B,H]
    h = self.frame(torch.cat([expression, pose], -1)) + src_emb[:, None]  # [B,T,H]
    for i in range(self.layers):
      h = getattr(self, f"temporal_{i}")(h)
    h = self.norm(h)
    for i in range(self.depth):
      h = gelu(getattr(self, f"head_{i}")(h))
    delta = self.out(h)  # [B,T,6K]
    out_value = value[:, None] + delta[..., :2 * k].reshape(b, t, k, 2)
    out_jac = jac[:, None].expand(b, t, k, 2, 2)
    if self.jacobian:
      out_jac = out_jac + delta[..., 2 * k:].reshape(b, t, k, 2, 2)
    return {"value": out_value, "jacobian": out_jac}


def predict_keypoints(predictor: KeypointPredictor, kp_src, expression, pose, ecfg):
  """keypoint_predictor.predict: 'learned' feeds the whole pose; 'geometric' feeds roll, tx, ty,
  scale at the dataset mean (normalised 0) and moves the keypoints [B,T,K,2] and Jacobians
  [B,T,K,2,2] by the similarity n -> a n + b that takes the mean in-plane pose to the frame's."""
  mode = ecfg.get("inplane_pose", "learned")
  if mode == "learned":
    return predictor(kp_src, expression, pose)
  assert mode == "geometric", mode
  mean = torch.tensor(ecfg.pose_mean, dtype=pose.dtype)
  std = torch.tensor(ecfg.pose_std, dtype=pose.dtype)
  no_inplane = torch.cat([pose[..., :2], torch.zeros_like(pose[..., 2:])], -1)
  kp = predictor(kp_src, expression, no_inplane)
  raw = pose * std + mean  # [B,T,6] yaw, pitch, roll, tx, ty, scale
  theta, s = -(raw[..., 2] - mean[2]), raw[..., 5] / mean[5]
  c, sn = torch.cos(theta), torch.sin(theta)
  a = s[..., None, None] * torch.stack([torch.stack([c, -sn], -1), torch.stack([sn, c], -1)], -2)
  b = raw[..., 3:5] - a @ mean[3:5]
  value = (a[:, :, None] @ kp["value"][..., None])[..., 0] + b[:, :, None]
  return {"value": value, "jacobian": a[:, :, None] @ kp["jacobian"]}


class ExpressionModels(nn.Module):
  """{'expression', 'keypoints'}: the stage's trainable params tree as one torch module."""

  def __init__(self, ecfg, num_kp):
    super().__init__()
    self.expression = ExpressionEncoder(ecfg)
    self.keypoints = KeypointPredictor(ecfg, num_kp)


def normalise_landmarks(pixels, size):
  return (pixels + 0.5) * (2.0 / size) - 1.0


def landmark_loss(pred, target, mouth_weight=5.0):
  w = torch.ones(NUM_LANDMARKS, dtype=pred.dtype)
  w[MOUTH] = mouth_weight
  per_point = (pred - target).abs().sum(-1)  # [...,68]
  return ((per_point * w).sum(-1) / (2.0 * w.sum())).mean()


def detect(kp_detector, images):
  """Frozen torch_fomm.KPDetector (eval mode) on [...,H,W,3] in [0,1] -> kp with leading dims."""
  lead = images.shape[:-3]
  with torch.no_grad():  # the JAX stage stop_gradients the renderer variables
    kp = kp_detector(images.reshape(-1, *images.shape[-3:]).permute(0, 3, 1, 2))
  return {k: v.reshape(*lead, *v.shape[1:]) for k, v in kp.items()}


def expression_loss(models: ExpressionModels, kp_detector, batch: dict, ecfg, dtype=torch.float32):
  """ExpressionStage.loss with w_rec = 0: (loss, metrics). batch: torch tensors (uint8 images,
  landmarks in crop pixels), the input_pipeline layout."""
  if ecfg.w_rec:
    raise NotImplementedError("the mirror covers w_rec = 0 (the default) only")
  if ecfg.get("kp_target", "frame") != "frame":
    raise NotImplementedError("the mirror covers kp_target='frame' (the default) only")
  source = batch["source"].to(dtype) / 255.0  # [B,H,W,3]
  size = source.shape[1]
  src_lm = normalise_landmarks(batch["source_landmarks"].to(dtype), size)
  pose = batch["pose"].to(dtype)
  out = models.expression(batch["mel"].to(dtype), source, src_lm, pose)
  kp_src = detect(kp_detector, source)
  kp = predict_keypoints(models.keypoints, kp_src, out["expression"], pose, ecfg)
  lm_true = normalise_landmarks(batch["landmarks"].to(dtype), size)
  lm = landmark_loss(out["landmarks"], lm_true, ecfg.mouth_weight)
  kp_true = detect(kp_detector, batch["frames"].to(dtype) / 255.0)  # [B,T,K,2], [B,T,K,2,2]
  kp_v = (kp["value"] - kp_true["value"]).abs().mean()
  kp_j = (kp["jacobian"] - kp_true["jacobian"]).abs().mean()
  loss = ecfg.w_landmark * lm + ecfg.w_kp_value * kp_v + ecfg.w_kp_jacobian * kp_j
  return loss, {"loss": loss, "landmark_loss": lm, "kp_value_l1": kp_v, "kp_jacobian_l1": kp_j,
                "landmark_l1": (out["landmarks"] - lm_true).abs().mean().detach(),
                "landmarks": out["landmarks"], "expression": out["expression"], "kp": kp}


# ----------------------------------------------------------------------------------------------
# Optimizer: optax.chain(clip_by_global_norm(c), adam(lr)) in torch.

def clip_by_global_norm_(params, max_norm: float):
  """optax.clip_by_global_norm: g * max / norm only when norm > max (torch's clip_grad_norm_
  divides by norm + 1e-6 always). Returns the global norm."""
  grads = [p.grad for p in params if p.grad is not None]
  norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
  scale = torch.where(norm > max_norm, max_norm / norm, torch.ones_like(norm))
  torch._foreach_mul_(grads, scale)  # pylint: disable=protected-access
  return norm


def make_step(module: nn.Module, loss_fn, lr_schedule, grad_clip: float):
  """-> step(batch) -> metrics: forward, backward, clip, Adam (optax defaults: b1 0.9,
  b2 0.999, eps 1e-8, bias correction), lr from ``lr_schedule(step)`` (a python callable)."""
  params = [p for p in module.parameters() if p.requires_grad]
  opt = torch.optim.Adam(params, lr=float(lr_schedule(0)), betas=(0.9, 0.999), eps=1e-8,
                         foreach=True)
  count = [0]

  def step(batch):
    for g in opt.param_groups:
      g["lr"] = float(lr_schedule(count[0]))
    opt.zero_grad(set_to_none=True)
    loss, metrics = loss_fn(batch)
    loss.backward()
    metrics["grad_norm"] = clip_by_global_norm_(params, grad_clip)
    opt.step()
    count[0] += 1
    return metrics

  return step


# ----------------------------------------------------------------------------------------------
# Flax params -> torch state_dict.

def _flat(tree, prefix=()):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict) or hasattr(v, "items"):
      out.update(_flat(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = np.asarray(v)
  return out


def flax_to_state_dict(params) -> dict:
  """Flax params tree -> {torch key: tensor}: 'a/b/kernel' -> 'a.b.weight' (Dense [in,out] ->
  [out,in]; Conv [k,in,out] -> [out,in,k]; [kh,kw,in,out] -> [out,in,kh,kw]), 'scale' ->
  'weight' (LayerNorm), raw params (w, enc_pos, dec_pos) unchanged."""
  sd = {}
  for path, v in _flat(params).items():
    name = path[-1]
    if name == "kernel":
      perm = {2: (1, 0), 3: (2, 1, 0), 4: (3, 2, 0, 1)}[v.ndim]
      v, name = v.transpose(perm), "weight"
    elif name == "scale":
      name = "weight"
    sd[".".join(path[:-1] + (name,))] = torch.from_numpy(np.array(v))  # a writable copy
  return sd


def load_flax_params(module: nn.Module, params, dtype=None) -> dict:
  """Loads a Flax params tree into ``module``; raises ValueError naming every missing, extra or
  mis-shaped key (no silent partial loads). Returns the converted state_dict."""
  sd = flax_to_state_dict(params)
  want = module.state_dict()
  missing = sorted(set(want) - set(sd))
  extra = sorted(set(sd) - set(want))
  bad = sorted(k for k in set(sd) & set(want) if tuple(sd[k].shape) != tuple(want[k].shape))
  if missing or extra or bad:
    raise ValueError("flax params do not match the torch module:\n"
                     f"  missing: {missing}\n  extra: {extra}\n"
                     f"  bad shape: {[(k, tuple(sd[k].shape), tuple(want[k].shape)) for k in bad]}")
  dtype = dtype or next(iter(want.values())).dtype
  module.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True)
  return sd


def warmup_cosine_lr(init: float, peak: float, warmup: int, decay_steps: int, end: float):
  """optax.warmup_cosine_decay_schedule(init, peak, warmup, decay_steps, end) as python."""

  def lr(step):
    if step < warmup:
      return init + (peak - init) * step / warmup
    frac = min(step - warmup, decay_steps - warmup) / max(decay_steps - warmup, 1)
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * frac))

  return lr
