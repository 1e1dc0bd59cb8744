"""``synth_talk``: the embedded procedural talking-head dataset (DESIGN.md §2).

- ``builder.SynthTalk`` / ``builder.build``: the TFDS builder (configs 32px, 64px, 128px).
- ``clips.generate_clip``: one clip as NumPy arrays, a pure function of (seed, split, index).
- ``motion.redraw_head_motions`` / ``clips.redraw_for_example``: N fresh valid head motions for
  one clip's audio (ground truth of the one-to-many evaluation).
- ``python -m data.synth_talk --help``: build from the command line, with a preview.
"""
