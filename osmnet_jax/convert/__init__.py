"""PyTorch checkpoints -> Flax variables (DESIGN.md §6: ``convert.load_fomm``).

  python -m osmnet_jax.convert --from fomm vox-cpk.pth.tar --out W
  python -m osmnet_jax.convert --from audio2head audio2head.pth.tar --out W

torch_state: the safe .pth reader and the shared state dict -> Flax loop; fomm, audio2head: one
module per source model.
"""
from osmnet_jax.convert.audio2head import load_audio2head
from osmnet_jax.convert.fomm import (
                                            convert_fomm,
                                            load_converted,
                                            load_fomm,
                                            save_converted,
)
from osmnet_jax.convert.torch_state import (
                                            CheckpointError,
                                            CheckpointMismatchError,
                                            UnsafeCheckpointError,
                                            read_torch_checkpoint,
)

__all__ = ["CheckpointError", "CheckpointMismatchError", "UnsafeCheckpointError", "convert_fomm",
           "load_audio2head", "load_converted", "load_fomm", "read_torch_checkpoint",
           "save_converted"]
