"""PyTorch checkpoints -> Flax variables (DESIGN.md §6: ``convert.load_fomm``).

  python -m osmnet_jax.convert --from fomm vox-cpk.pth.tar --out W
  python -m osmnet_jax.convert --from audio2head audio2head.pth.tar --out W
"""
from osmnet_jax.convert.fomm import (CheckpointMismatchError, convert_fomm, load_audio2head,
                                     load_converted, load_fomm, read_torch_checkpoint,
                                     save_converted)

__all__ = ["CheckpointMismatchError", "convert_fomm", "load_audio2head", "load_converted",
           "load_fomm", "read_torch_checkpoint", "save_converted"]
