"""Faces: geometry (3-D mean face, projection), track (the video detection pass), crop (one stable
square crop per clip), landmarks (detector / 68-point backends), pose (head pose from landmarks)."""
