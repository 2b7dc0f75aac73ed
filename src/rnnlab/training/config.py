"""What the training loop itself is told, the same for every task; each task's train config
extends it (and may give other defaults)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from rnnlab.validate import check_non_negative_int, check_number, check_positive_int

SAVE_MINUTES = 10.0  # default: a killed run loses at most this much training


@dataclass
class LoopConfig:
    """The loop's settings (saved with every checkpoint, inside the task's train config).

    ``log_every`` 0 writes one metrics record per epoch (its loss the epoch's mean).
    ``warmup_steps`` W multiplies the learning rate by (s + 1) / W at the steps s < W (on top of
    any schedule): large effective batches (data-parallel training) start stably with it.
    ``save_every`` N writes the checkpoint every N steps as well as at each epoch's end;
    ``save_minutes`` M every M minutes of training (0: neither), so that a run killed without
    warning (``kill -9``, out of memory, a lost machine) loses at most that much.
    """

    epochs: int = 1
    clip: float = 1.0  # max global gradient L2 norm; 0 disables clipping
    log_every: int = 50  # optimizer steps between metric records (0: one per epoch)
    max_steps: int = 0  # stop after this many steps in total (0: no limit)
    patience: int = 0  # early stop after this many evaluations without improvement (0: off)
    save_every: int = 0  # steps between periodic checkpoints (0: off)
    save_minutes: float = SAVE_MINUTES  # minutes of training between periodic checkpoints
    warmup_steps: int = 0  # the lr rises linearly over the first N steps (0: off)

    def __post_init__(self) -> None:
        self.epochs = check_positive_int("epochs", self.epochs)
        for name in ("log_every", "max_steps", "patience", "save_every", "warmup_steps"):
            setattr(self, name, check_non_negative_int(name, getattr(self, name)))
        check_number("clip", self.clip)
        check_number("save_minutes", self.save_minutes)


def dataclass_from_dict(cls, values: dict):
    """Build a config dataclass, rejecting unknown keys."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"{cls.__name__}: unknown keys {unknown}; expected some of {sorted(known)}"
        )
    return cls(**values)
