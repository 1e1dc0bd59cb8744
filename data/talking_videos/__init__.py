"""``talking_videos``: real talking-head videos from a folder (DESIGN.md §2).

- ``python -m data.prepare --videos DIR --out DATA_DIR``: the whole job (per-video work in
  parallel processes, resumable, report.json), then the TFDS build.
- ``process.process_video``: one video -> clips (crop, landmarks, pose, mel).
- ``builder.TalkingVideos`` / ``builder.build``: packs the finished clips into TFRecord shards.
"""
