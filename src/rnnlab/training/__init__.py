"""The training engine: one loop, checkpoints, signals and metrics for every task.

A task (:class:`Task`: language models, seq2seq, the long-lag benchmarks, ...) says how its data
is batched, what one step's loss is and what it measures; :class:`Trainer` does the rest.
"""

from rnnlab.training.config import SAVE_MINUTES, LoopConfig, dataclass_from_dict
from rnnlab.training.distributed import DistributedError, part, world
from rnnlab.training.records import append_record, keep_records, read_records
from rnnlab.training.signals import Interrupted
from rnnlab.training.trainer import (
    ShardedBatches,
    Stop,
    Task,
    Trainer,
    TrainingDiverged,
    kept_weights,
)

__all__ = ["SAVE_MINUTES", "DistributedError", "Interrupted", "LoopConfig", "ShardedBatches",
           "Stop", "Task", "Trainer", "TrainingDiverged", "append_record", "dataclass_from_dict",
           "keep_records", "kept_weights", "part", "read_records", "world"]
