"""LSE-D / LSE-C lip-sync metrics (Wav2Lip's names for SyncNet's min distance and confidence).

    scorer = syncnet_lse.load("syncnet_v2.model")   # public weights, taken by path only
    scorer(frames, audio)  # frames uint8 [T,H,W,3] RGB face crops, audio [S] 16 kHz
    -> {"lse_d": float, "lse_c": float, "offset": int}

Protocol of joonson/syncnet_python `SyncNetInstance.evaluate` (run with `--vshift 15`, the
default of its run_syncnet.py and of Wav2Lip's evaluation scripts):
  1. MFCC of the whole waveform with python_speech_features' defaults (13 coefficients, 25 ms
     rectangular windows every 10 ms, nfft 512, 26 mel filters, pre-emphasis 0.97, lifter 22,
     c0 = log frame energy) on int16-scale samples -> [F, 13], 100 frames/s = 4 per video frame
     (numpy implementation: osmnet_jax.audio2head.features.mfcc);
  2. min_length = min(T, floor(S / 640)); windows v = 0 .. min_length - 6 (`range(0, lastframe)`
     with lastframe = min_length - 5): video frames v .. v+4 (BGR, 0..255, 224x224) and MFCC
     frames 4v .. 4v+19; each through SyncNet -> video / audio embeddings [N, 1024];
  3. calc_pdist: the audio embeddings are zero-padded by vshift rows on both ends; for window i
     and shift j in 0..2 vshift, d[i, j] = ||video_i - audio_pad[i + j] + 1e-6||_2 (torch
     pairwise_distance with its eps), i.e. video i vs audio i + j - vshift;
  4. mdist[j] = mean_i d[i, j]; LSE-D = min_j mdist; LSE-C = median_j mdist - LSE-D;
     offset = vshift - argmin_j mdist. offset = k > 0 means the best match pairs video frame i
     with audio frame i - k (the video lags the audio by k frames).
Steps 3-4 are the pure function `sync_scores` (testable without the networks). A property of
the zero padding kept here: a padded partner is at distance |video_i|, usually less than an
unrelated pair, so for out-of-sync clips the minimum drifts to an extreme shift (|offset| near
vshift) and LSE-C stays small but positive rather than ~0; short clips (N < 2 vshift + 1
windows) see this most.

Deviations from syncnet_python, and why:
  * No face detection / tracking / cropping (its run_pipeline.py: S3FD, 40% margin crop): the
    caller passes face crops, which are only resized to 224x224 with cv2.resize's default
    bilinear filter, as run_pipeline's crop_video does.
  * No lossy round trips: syncnet_python writes the crop track to an mp4 and `evaluate` reads
    it back as JPEG frames through ffmpeg; here the pixels are scored as given, so numbers can
    differ slightly from published ones computed on re-encoded video.
  * Audio comes as an array, not a wav written by ffmpeg: float audio is taken as [-1, 1] and
    scaled by 32768 and rounded to int16 values (what scipy's wavfile returns for pcm_s16le and
    what python_speech_features then uses unscaled; only c0 depends on the scale). int16 input
    is used as is. It must already be 16 kHz mono (no resampling here).
  * Embeddings are computed in fixed-size batches (the last one zero-padded, its padding
    dropped) under one jitted function: one compile per batch size, same values (BatchNorm is in
    eval mode). Distances are computed in float64 (torch: float32); they differ at float32
    rounding level.
  * The per-frame confidence curve (fconf / medfilt) that `evaluate` only logs is not computed.
"""
from __future__ import annotations

import functools

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from osmnet_jax.audio2head import features as psf
from osmnet_jax.models import syncnet

SAMPLE_RATE = 16_000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MFCC_PER_FRAME = 4
VSHIFT = 15
PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance's default eps


# ----------------------------------------------------------------------------------------------
# Pure parts: features, windows, the distance / offset protocol.


def mfcc(audio: np.ndarray) -> np.ndarray:
  """Audio [S] (int16, or float in [-1, 1]) at 16 kHz -> float64 [F, 13] MFCC, F = 1 +
  ceil((S - 400) / 160) (= 4T - 1 for S = 640 T): python_speech_features.mfcc(audio, 16000)."""
  return psf.mfcc(int16_scale(audio), SAMPLE_RATE)


def int16_scale(audio: np.ndarray) -> np.ndarray:
  """float [-1, 1] -> float64 int16 values (rounded, clipped); int16 kept as is."""
  audio = np.asarray(audio)
  if audio.ndim != 1:
    raise ValueError(f"audio must be mono [S], got shape {audio.shape}")
  if audio.dtype == np.int16:
    return audio.astype(np.float64)
  return np.clip(np.round(audio.astype(np.float64) * 32768.0), -32768, 32767)


def num_windows(num_frames: int, num_samples: int) -> int:
  """Number of 5-frame windows syncnet_python scores: min(T, floor(S / 640)) - 5."""
  return min(num_frames, num_samples // SAMPLES_PER_FRAME) - (syncnet.LIP_FRAMES)


def audio_windows(mfcc_feat: np.ndarray, n: int) -> np.ndarray:
  """[F, 13] -> [n, 13, 20, 1]: window v is MFCC frames 4v .. 4v+19 (coefficients x time)."""
  idx = MFCC_PER_FRAME * np.arange(n)[:, None] + np.arange(syncnet.AUDIO_WINDOW)[None, :]
  if n and idx[-1, -1] >= len(mfcc_feat):
    raise ValueError(f"{len(mfcc_feat)} MFCC frames are too few for {n} windows")
  return np.transpose(mfcc_feat[idx], (0, 2, 1))[..., None].astype(np.float32)


def prepare_frames(frames: np.ndarray) -> np.ndarray:
  """uint8 RGB [T, H, W, 3] -> float32 BGR [T, 224, 224, 3] in 0..255 (what cv2.imread gives
  syncnet_python after crop_video's cv2.resize to 224x224)."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be [T, H, W, 3] RGB, got shape {frames.shape}")
  size = syncnet.LIP_SIZE
  out = np.empty((len(frames), size, size, 3), np.float32)
  for t, f in enumerate(frames):
    if f.shape[:2] != (size, size):
      f = cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR)
    out[t] = f[..., ::-1]
  return out


def offset_distances(video_emb: np.ndarray, audio_emb: np.ndarray,
                     vshift: int = VSHIFT) -> np.ndarray:
  """syncnet_python's calc_pdist: [N, D] x2 -> d [N, 2 vshift + 1], d[i, j] = distance of video
  window i to audio window i + j - vshift (zero vector outside 0..N-1)."""
  v = np.asarray(video_emb, np.float64)
  a = np.asarray(audio_emb, np.float64)
  if v.shape != a.shape or v.ndim != 2:
    raise ValueError(f"embeddings must both be [N, D], got {v.shape} and {a.shape}")
  n = len(v)
  ap = np.pad(a, ((vshift, vshift), (0, 0)))
  # A loop over shifts keeps memory at O(N D) for long clips.
  return np.stack([np.linalg.norm(v - ap[j:j + n] + PAIRWISE_EPS, axis=-1)
                   for j in range(2 * vshift + 1)], axis=1)


def sync_scores(video_emb: np.ndarray, audio_emb: np.ndarray, vshift: int = VSHIFT) -> dict:
  """Embeddings [N, D] x2 -> {"lse_d", "lse_c", "offset", "mean_dist" [2 vshift + 1]}."""
  mdist = offset_distances(video_emb, audio_emb, vshift).mean(axis=0)
  j = int(np.argmin(mdist))
  lse_d = float(mdist[j])
  return {"lse_d": lse_d, "lse_c": float(np.median(mdist) - lse_d), "offset": vshift - j,
          "mean_dist": mdist}


# ----------------------------------------------------------------------------------------------
# The scorer (networks).


@functools.partial(jax.jit, static_argnames=("embed_dim",))
def _embed(variables, mfcc_win, lip_win, embed_dim=syncnet.EMBED_DIM):
  """[B,13,20,1], [B,5,224,224,3] -> (audio [B,E], video [B,E])."""
  return syncnet.SyncNet(embed_dim).apply(variables, mfcc_win, lip_win)


class Scorer:
  """Callable LSE scorer around converted SyncNet variables (see the module docstring)."""

  def __init__(self, variables: dict, batch_size: int = 16, vshift: int = VSHIFT):
    self.variables = jax.tree_util.tree_map(jnp.asarray, variables)
    self.embed_dim = int(variables["params"]["netfcaud_3"]["bias"].shape[0])
    self.batch_size = int(batch_size)
    self.vshift = int(vshift)

  def embeddings(self, frames: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (video_emb, audio_emb), each float32 [N, E] with N = num_windows(T, S)."""
    n = num_windows(len(frames), len(audio))
    if n < 1:
      raise ValueError(
          f"SyncNet needs at least {syncnet.LIP_FRAMES + 1} frames of video and of audio "
          f"({SAMPLES_PER_FRAME} samples each); got {len(frames)} frames, {len(audio)} samples")
    mf = audio_windows(mfcc(audio), n)  # [n, 13, 20, 1]
    img = prepare_frames(frames[: n + syncnet.LIP_FRAMES - 1])  # [n + 4, 224, 224, 3]
    b = self.batch_size
    vid_out, aud_out = [], []
    for s in range(0, n, b):
      k = min(b, n - s)
      lip = np.zeros((b, syncnet.LIP_FRAMES) + img.shape[1:], np.float32)
      lip[:k] = img[s + np.arange(k)[:, None] + np.arange(syncnet.LIP_FRAMES)[None, :]]
      aud = np.zeros((b,) + mf.shape[1:], np.float32)
      aud[:k] = mf[s:s + k]
      a, v = _embed(self.variables, aud, lip, embed_dim=self.embed_dim)
      aud_out.append(np.asarray(a)[:k])
      vid_out.append(np.asarray(v)[:k])
    return np.concatenate(vid_out), np.concatenate(aud_out)

  def __call__(self, frames: np.ndarray, audio: np.ndarray,
               sample_rate: int = SAMPLE_RATE) -> dict:
    """frames uint8 [T,H,W,3] RGB face crops (25 fps), audio [S] at 16 kHz ->
    {"lse_d": float, "lse_c": float, "offset": int}."""
    if sample_rate != SAMPLE_RATE:
      raise ValueError(f"SyncNet scoring needs 16 kHz audio, got {sample_rate} Hz")
    video_emb, audio_emb = self.embeddings(frames, audio)
    out = sync_scores(video_emb, audio_emb, self.vshift)
    return {"lse_d": out["lse_d"], "lse_c": out["lse_c"], "offset": int(out["offset"])}


def load(path: str, batch_size: int = 16, vshift: int = VSHIFT) -> Scorer:
  """Public SyncNet weights (syncnet_python's syncnet_v2.model) by path -> Scorer. Raises
  FileNotFoundError naming the file and where to get it; CheckpointMismatchError on bad keys."""
  return Scorer(syncnet.load_syncnet(path), batch_size=batch_size, vshift=vshift)
