"""Converts the published Audio2Head checkpoint (`audio2head.pth.tar`, PyTorch) to JAX variables.

    variables, cfg = convert.load_audio2head("audio2head.pth.tar")
    python -m osmnet_jax.convert --from audio2head audio2head.pth.tar --out W

The file holds four state dicts: 'kp_detector' and 'generator' (a FOMM vox-256 renderer with 10
keypoints and Jacobians; converted by `convert.convert_fomm`, so `convert.load_fomm` also reads
this file), 'audio2kp' (`models.audio2kp.AudioModel3D`) and 'audio2pose'
(`models.audio2pose.Audio2PoseLSTM`). `variables` has one {'params', 'batch_stats'} entry per
part; `cfg` is the renderer config plus `cfg.audio2kp` and `cfg.audio2pose` (sizes inferred from
the tensor shapes). Any missing, unexpected or mis-shaped key raises
`CheckpointMismatchError` naming every offending torch key (prefixed with its part).

Key mapping (Flax modules mirror the torch attribute names; `torch_state.convert_state_dict`):
  * `a.b.0.c` -> Flax path `a/b_0/c`; nested Sequential indices join too
    (`predictor.decoder.res_blocks.0.1.weight` -> `predictor/decoder/res_blocks_0_1/scale`,
    `em_img.resnet.layer2.0.downsample.1.running_var` -> `.../layer2_0/downsample_1` 'var');
  * Conv3d `weight` [O,I,kt,kh,kw] -> `kernel` [kt,kh,kw,I,O]; Conv2d [O,I,kh,kw] -> [kh,kw,I,O];
    Linear [O,I] -> [I,O]; BatchNorm `weight` -> `scale`, running stats -> batch_stats;
  * LSTM `weight_ih_l{k}` / `weight_hh_l{k}` [4H,in] -> `kernel_ih_l{k}` / `kernel_hh_l{k}`
    [in,4H]; `bias_ih_l{k}` / `bias_hh_l{k}` kept separately (both are added);
  * the anti-alias buffers `down_id.weight` [3,1,13,13] and `down_pose.weight` [seq_len,1,13,13]
    are checked against the recomputed x1/4 Gaussian and dropped (`down_pose`'s channel count is
    the model's seq_len); `num_batches_tracked` is dropped.

Parity traps (tests/test_audio2head.py checks them against tests/torch_audio2head.py):
  A1. `embedding.0` is a ConvTranspose2d: its weight is [in, out, kh, kw] (not [out, in, ...]), so
      it transposes (2,3,0,1), and the stride-1 transposed conv equals a correlation with the
      *spatially flipped* kernel and padding k-1-p per side ((0,11) -> (28,2) for a 29x14 kernel):
      4x41 audio rows -> 32x32. Without the flip the output is plausible but wrong.
  A2. `kp` is a 7x7x7 Conv3d with padding (3,0,0): time keeps its length, space loses 6 px (64 ->
      58); the Jacobian head is a 2-D 7x7 padding-0 conv applied per frame, with torch channel
      4k+j -> (keypoint k, entry j) as in FOMM.
  A3. Audio2Head's AntiAliasInterpolation2d subsamples with nearest `F.interpolate(scale_factor=
      0.25)` instead of FOMM's `[::4]` slicing; nearest with an explicit scale factor picks source
      pixel floor(4 i), the same pixels. `down_pose` filters the T pose frames as T channels of
      one image: identical per-frame depthwise filtering here.
  A4. The audio embedding is reshaped (bs, T, 2, 64, 64) then permuted to channels (B, 2, T, ...);
      channels-last this is a plain reshape to [B,T,64,64,2]. Input channel order of the 3-D
      hourglass is audio (2), identity (3), pose (1).
  A5. Decoder3D runs each skip through its own ResBlock3d -> BatchNorm3d -> ReLU before the
      concatenation (torch `res_blocks.j` Sequential, indices 0 and 1; the ReLU has no weights),
      and UpBlock3d ends with res -> norm2 -> ReLU; AvgPool3d(2) floors odd sizes, so T must be
      divisible by 2**num_blocks (64 frames at the published 5 blocks).
  A6. audio2pose's LSTM feeds its own top-layer output back: step t's input is concat(audio_t,
      h_{t-1}) with h_{-1} = the image embedding (not a separate state); the output has T+1
      poses, the first from the image embedding alone. Torch gate order is i, f, g, o and it has
      two bias vectors per layer (b_ih + b_hh).
  A7. ResNet-34 here is torchvision's: 7x7/2 conv pad 3 without bias, MaxPool2d(3, 2, 1) pads with
      -inf (Flax max_pool with explicit padding does too), stride on the first 3x3 conv of
      layers 2-4, 1x1 projection `downsample.0/.1`; the audio branch sees [N,1,4,41] images
      (1x1 spatial after layer 2) -- the global average pool makes it size-agnostic.
  A8. sync_batchnorm's SynchronizedBatchNorm{2,3}d in the original are plain BatchNorm in eval mode
      (eps 1e-5, running statistics); they store the same keys.
"""
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from osmnet_jax.convert import fomm, torch_state
from osmnet_jax.convert.torch_state import CheckpointMismatchError
from osmnet_jax.models import audio2kp as a2k
from osmnet_jax.models import audio2pose as a2p

PARTS = ("kp_detector", "generator", "audio2kp", "audio2pose")

# Published sizes (config/parameters.yaml and modules/audio2pose.py).
AUDIO2KP_DEFAULTS = dict(block_expansion=32, max_features=512, num_blocks=5, num_kp=10, seq_len=64,
                         estimate_jacobian=True)
AUDIO2POSE_DEFAULTS = dict(embedding_dim=256, layers=(3, 4, 6, 3), widths=(64, 128, 256, 512),
                           num_lstm_layers=2, pose_dim=6)

TRANSPOSED_CONVS = ("embedding.0.",)  # torch ConvTranspose2d modules: weight [I,O,kh,kw]
ANTIALIAS_BUFFERS = ("down_id.weight", "down_pose.weight")
_HEADER = "Audio2Head checkpoint does not match"


def convert_part(sd: dict[str, np.ndarray], expected: dict, prefix: str,
                 buffers: tuple[str, ...] = ()) -> dict:
  """Maps one torch state dict onto `expected` ({'params', 'batch_stats'} of ShapeDtypeStructs).

  `buffers` are torch keys that are allowed in the file but not Flax variables (checked by the
  caller). Raises CheckpointMismatchError listing every missing / unexpected / mis-shaped key.
  """
  return torch_state.convert_state_dict(sd, expected, header=_HEADER, prefix=prefix,
                                        skip=buffers, transposed=TRANSPOSED_CONVS)


def _raise_if(missing, extra, bad_shape, bad_buffer):
  torch_state.raise_mismatch(_HEADER, missing, extra, bad_shape, bad_buffer)


# ----------------------------------------------------------------------------------------------
# Config inference.


def _need(sd, key, prefix):
  if key not in sd:
    _raise_if([prefix + key], [], [], [])
  return np.asarray(sd[key])


def audio2kp_config(sd: dict) -> ml_collections.ConfigDict:
  """AudioModel3D sizes from its state dict; checks the anti-alias buffers."""
  p = "audio2kp."
  nb = torch_state.count_indices(sd, r"predictor\.encoder\.down_blocks\.(\d+)\.")
  if nb == 0:
    _raise_if([p + "predictor.encoder.down_blocks.0.conv.weight"], [], [], [])
  chans = [_need(sd, f"predictor.encoder.down_blocks.{i}.conv.weight", p).shape[0]
           for i in range(nb)]
  be = _need(sd, f"predictor.decoder.up_blocks.{nb - 1}.conv.weight", p).shape[0]
  bad = []
  for key in ANTIALIAS_BUFFERS:
    buf = _need(sd, key, p)
    if buf.ndim != 4 or buf.shape[1] != 1 or fomm.antialias_scale(buf) != 0.25:
      bad.append(f"{p}{key} (not the x1/4 anti-alias Gaussian kernel)")
  _raise_if([], [], [], bad)
  return ml_collections.ConfigDict(dict(
      block_expansion=int(be), max_features=int(max(chans)), num_blocks=int(nb),
      num_kp=int(_need(sd, "kp.weight", p).shape[0]),
      seq_len=int(sd["down_pose.weight"].shape[0]),
      estimate_jacobian="jacobian.weight" in sd,
  ))


def audio2pose_config(sd: dict) -> ml_collections.ConfigDict:
  """Audio2PoseLSTM sizes from its state dict."""
  p = "audio2pose."
  base = "em_img.resnet."
  stages = range(1, 5)  # ResNet layer1 .. layer4
  layers = tuple(torch_state.count_indices(sd, re.escape(f"{base}layer{i}.") + r"(\d+)\.")
                 for i in stages)
  if not all(layers):
    _raise_if([f"{p}{base}layer{i}.0.conv1.weight" for i, n in zip(stages, layers) if not n],
              [], [], [])
  widths = tuple(int(_need(sd, f"{base}layer{i}.0.conv1.weight", p).shape[0]) for i in stages)
  return ml_collections.ConfigDict(dict(
      embedding_dim=int(_need(sd, f"{base}fc.weight", p).shape[0]),
      layers=layers, widths=widths,
      num_lstm_layers=int(torch_state.count_indices(sd, r"lstm\.weight_ih_l(\d+)$")),
      pose_dim=int(_need(sd, "output.weight", p).shape[0]),
  ))


def expected_audio2kp(cfg) -> dict:
  model = a2k.from_config(cfg)
  t = int(cfg.seq_len)
  size = 4 * 2 * a2k.EMBED_SIZE
  return jax.eval_shape(
      model.init, jax.random.PRNGKey(0),
      jax.ShapeDtypeStruct((1, t, a2k.AUDIO_ROWS, a2k.AUDIO_DIMS), jnp.float32),
      jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32),
      jax.ShapeDtypeStruct((1, t, size, size), jnp.float32),
  )


def expected_audio2pose(cfg) -> dict:
  return jax.eval_shape(
      a2p.from_config(cfg).init, jax.random.PRNGKey(0),
      jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32),
      jax.ShapeDtypeStruct((1, 1, a2k.AUDIO_ROWS, a2k.AUDIO_DIMS), jnp.float32),
  )


# ----------------------------------------------------------------------------------------------
# Whole checkpoint.


def convert_audio2head(ckpt: dict) -> tuple[dict, ml_collections.ConfigDict]:
  """Converts an in-memory Audio2Head checkpoint dict (torch tensors or numpy arrays)."""
  absent = [name for name in PARTS if name not in ckpt]
  if absent:
    raise CheckpointMismatchError(
        f"not an Audio2Head checkpoint: no {absent} entr{'y' if len(absent) == 1 else 'ies'} "
        f"(top-level keys: {sorted(ckpt)})"
    )
  errors, variables = [], {}
  try:
    renderer_vars, cfg = fomm.convert_fomm(
        {"kp_detector": ckpt["kp_detector"], "generator": ckpt["generator"]})
    variables.update(renderer_vars)
  except CheckpointMismatchError as e:
    errors.append(str(e).split("\n", 1)[1])
    cfg = ml_collections.ConfigDict()
  for name, infer, expect in (("audio2kp", audio2kp_config, expected_audio2kp),
                              ("audio2pose", audio2pose_config, expected_audio2pose)):
    sd = torch_state.numpy_state_dict(ckpt[name])
    try:
      part_cfg = infer(sd)
      buffers = ANTIALIAS_BUFFERS if name == "audio2kp" else ()
      variables[name] = convert_part(sd, expect(part_cfg), f"{name}.", buffers)
      cfg[name] = part_cfg
    except CheckpointMismatchError as e:
      errors.append(str(e).split("\n", 1)[1])
  if not errors and cfg.audio2kp.num_kp != cfg.num_kp:
    errors.append(f"audio2kp predicts {cfg.audio2kp.num_kp} keypoints but the renderer "
                  f"(kp_detector.kp.weight) has {cfg.num_kp}")
  if errors:
    raise CheckpointMismatchError(
        "Audio2Head checkpoint does not match the architecture:\n" + "\n".join(errors))
  return variables, cfg


def load_audio2head(path: str) -> tuple[dict, ml_collections.ConfigDict]:
  """Reads Audio2Head's `audio2head.pth.tar` into (variables, cfg): variables for 'kp_detector',
  'generator' (the renderer; `cfg` is a renderer config) plus 'audio2kp' and 'audio2pose' (their
  sizes in `cfg.audio2kp` / `cfg.audio2pose`)."""
  return convert_audio2head(torch_state.read_torch_checkpoint(path))
