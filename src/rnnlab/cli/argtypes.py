"""Shared by the command-line parsers (``rnnlab.cli``): argparse
value types, the error for user mistakes, the checkpoint options of the training commands
and their exit status after a signal."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path


def _number_type(convert, ok, expected: str):
    """An argparse type: ``convert(text)``, kept when ``ok(value)``, else a usage error that
    says what was expected and what came."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    parse.__name__ = expected  # argparse names the type in "invalid ... value" messages
    return parse


INF = float("inf")
positive_int = _number_type(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _number_type(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number_type(float, lambda v: 0 < v < INF, "a finite number > 0")
non_negative_float = _number_type(float, lambda v: 0 <= v < INF, "a finite number >= 0")
probability = _number_type(float, lambda v: 0 <= v < 1, "a number in [0, 1)")  # dropout rates
unit_interval = _number_type(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def step_or_auto(text: str) -> float | str:
    """An argparse type: a finite step > 0, or "auto" (eval forecast --track)."""
    if text == "auto":
        return text
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0 or auto, got {text!r}"
                                         ) from None


def add_save_options(group) -> None:
    """--save-every and --save-minutes, the same on every training command."""
    group.add_argument("--save-every", type=non_negative_int, dest="save_every", metavar="N",
                       help="also write the checkpoint every N steps (default 0: off)")
    group.add_argument("--save-minutes", type=non_negative_float, dest="save_minutes",
                       metavar="M", help="also write the checkpoint every M minutes of training "
                       "(default 10; 0: off): a killed run loses at most that much")


def add_loop_options(group, eval_batch_size: bool = True) -> None:
    """--seed, --max-steps, --log-every (default one record per epoch) and the save options:
    the same on every epoch-based training command; and --eval-batch-size where it applies."""
    group.add_argument("--seed", type=non_negative_int, help="default 0")
    group.add_argument("--max-steps", type=non_negative_int, dest="max_steps",
                       help="stop after N steps in all (0: off)")
    group.add_argument("--log-every", type=non_negative_int, dest="log_every",
                       help="steps between metrics records (default 0: one per epoch)")
    if eval_batch_size:
        group.add_argument("--eval-batch-size", type=positive_int, dest="eval_batch_size")
    add_save_options(group)


class UserError(Exception):
    """A mistake on the command line or in the data: one line on stderr, exit status 2."""


def refuse_existing_run(out) -> None:
    """A new run never overwrites one: its directory must hold no checkpoint yet."""
    if (Path(out) / "checkpoint").exists():
        raise UserError(f"{out} already holds a run: use --resume to continue it, or choose "
                        "another --out")


def interrupted_exit_code(err: KeyboardInterrupt) -> int:
    """The shell's convention, 128 + the signal number: 143 for SIGTERM, 130 for Ctrl-C (an
    interrupt that names no signal)."""
    return 128 + int(getattr(err, "signum", signal.SIGINT))


CUDA_COMMANDS = "rnnlab train lm, rnnlab eval lm and rnnlab generate"


def add_device_option(parser, runs_on_cuda: bool = True) -> None:
    """``--device cpu|cuda``: where the model's arrays live (cuda needs CuPy and a GPU)."""
    from rnnlab.nn.backend import DEVICES

    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="where the model runs: cpu (NumPy, the default) or cuda (CuPy on "
                        "an NVIDIA GPU)" + ("" if runs_on_cuda else
                                            f"; only {CUDA_COMMANDS} run on cuda so far"))


def cpu_only(func, command: str):
    """``func`` for a command that runs on the CPU only: --device cuda is refused in one line."""
    def run(args: argparse.Namespace) -> int:
        if getattr(args, "device", "cpu") != "cpu":
            raise UserError(f"--device {args.device}: {command} runs on cpu only so far (on "
                            f"cuda: {CUDA_COMMANDS})")
        return func(args)

    return run
