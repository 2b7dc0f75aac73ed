"""Reading and writing files safely: atomic writes, safetensors (NumPy only), checkpoints."""

from rnnlab.io.atomic import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_files,
    atomic_write_json,
    atomic_write_text,
)
from rnnlab.io.checkpoint import load_checkpoint, save_checkpoint
from rnnlab.io.safetensors import CheckpointError, load_file, load_metadata, save_file

__all__ = [
    "CheckpointError",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_files",
    "atomic_write_json",
    "atomic_write_text",
    "load_checkpoint",
    "load_file",
    "load_metadata",
    "save_checkpoint",
    "save_file",
]
