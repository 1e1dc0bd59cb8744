"""``talking_videos``: real talking-head videos from a folder (DESIGN.md §2).

- ``python -m data.prepare --videos DIR --out DATA_DIR``: the whole job (per-video work on Beam
  workers or a process pool, resumable, report.json), then the TFDS build.
- ``process.process_video``: one video -> clips (crop, landmarks, pose, mel).
- ``pipeline``: the per-video work as a Beam pipeline (one element per video).
- ``storage``: local paths and gs:// / s3:// URLs (tf.io.gfile).
- ``builder.TalkingVideos`` / ``builder.build``: packs the finished clips into TFRecord shards
  (with TFDS's Beam writer when given Beam options).
"""
