"""``rnnlab bench``: benchmarks that train a small model and say whether it solved the task.

    rnnlab bench longdep --task adding --T 100 --cell lstm    the adding problem / copy task
    rnnlab bench longdep ... --save FILE.safetensors          ... and keep the trained model

The library code is :mod:`rnnlab.tasks.longdep`; this file only parses, calls and writes files.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import fields
from pathlib import Path

from rnnlab.cli.argtypes import (
    UserError,
    add_save_options,
    non_negative_float,
    positive_int,
    refuse_existing_run,
)
from rnnlab.inside.gradflow import TRAINED_FLOW_EXAMPLE
from rnnlab.tasks.longdep import (
    CELLS,
    INITS,
    TASKS,
    LongDepConfig,
    check_output_path,
    format_last_line,
    saved_config,
    train_longdep,
)
from rnnlab.training import SAVE_MINUTES

LONGDEP_DESCRIPTION = """\
Can a recurrent cell learn a dependency T steps long? Train one RNN/LSTM/GRU layer with a
linear readout (Adam, global gradient-norm clipping) on fresh random batches, score it on a
fixed test set every --eval-every steps, and print whether it solved the task.

Tasks:
  adding  (Hochreiter & Schmidhuber 1997; Le et al. 2015) each of T steps holds a random value
          in [0, 1) and a marker; exactly two steps are marked, one in the first half and one
          in the second. Target: the sum of the two marked values, read from the last hidden
          state. Baseline: predicting the mean (1.0) scores MSE ~0.167.
          SOLVED: test MSE < 0.01.
  copy    (Arjovsky et al. 2016) 10 symbols from 1..8, then T-1 blanks, a delimiter and 10
          blanks; after the delimiter the model must output the 10 symbols in order (blank
          targets elsewhere), T+20 steps in all. Baseline: a memoryless model's cross-entropy,
          10 log(8) / (T + 20) per step (0.173 at T=100).
          SOLVED: accuracy on the 10 recalled symbols > 0.99.

Gate-bias initialisation (--init):
  default  PyTorch's U(-1/sqrt(H), 1/sqrt(H)) for every parameter
  forget1  + 1 on the LSTM forget-gate bias (GRU: update gate)
  chrono   Tallec & Ollivier 2018: LSTM b_f ~ log U(1, T_max - 1), b_i = -b_f (GRU: b_z
           likewise), T_max = the sequence length: forget time scales spread over 1..T_max
           from the first step. The default: on adding T=100 (defaults otherwise) the LSTM
           solved in 2200 and 2600 steps (seeds 0, 1) against 3000 and 3200 at default init.
  A plain RNN ignores --init.

Cost on one core (LSTM, H=128, batch 64): about 0.9 ms per time step of a training step, so
~90 ms a step at T=100 (solved runs took 4-7 minutes) and ~180 ms at T=200 (solved
in 2400 steps, 10 minutes). The copy task is much harder: a GRU at T=100 was still at 36%
recall accuracy after 6000 steps; give it --steps 30000 or more.

The run stops at the first evaluation that meets the criterion (--no-stop-when-solved to go on).
--save FILE.safetensors writes the trained model (its state_dict: the recurrent layer rnn.*
and the readout) atomically, with the resolved configuration and the final metrics in the
file's metadata. `rnnlab gradflow --weights FILE` then shows how far back the gradient reaches
in the trained cell, next to the same model at its initialisation.

Progress: one line per evaluation. The last line is always
  task=adding T=100 cell=lstm test_mse=0.0043 baseline=0.167 solved=yes
  task=copy T=100 cell=gru test_loss=0.0012 baseline=0.1733 test_acc=1.0000 solved=yes
"""


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``bench`` (with its benchmark ``longdep``) to an ``add_subparsers()`` object;
    returns the ``bench`` parser."""
    bench = subparsers.add_parser(
        "bench", help="train small models on benchmark tasks (long time lags)",
        description="Benchmarks that train a small model and report whether it solved the task.")
    bsub = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    d = LongDepConfig()
    p = bsub.add_parser(
        "longdep", help="the adding problem and the copy task at lag T",
        description=LONGDEP_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  rnnlab bench longdep --task adding --T 100 --cell lstm\n"
        "  rnnlab bench longdep --task adding --T 200 --cell lstm --init default --steps 20000\n"
        "  rnnlab bench longdep --task copy --T 100 --cell gru --csv copy.csv\n"
        "Train, keep the weights, then look inside (gradient flow, trained vs. init):\n"
        + TRAINED_FLOW_EXAMPLE)
    p.add_argument("--task", choices=TASKS, default=d.task, help=f"default {d.task}")
    p.add_argument("--T", type=positive_int, default=d.T, dest="T",
                   help=f"the lag: sequence length (adding) or blank stretch (copy); "
                   f"default {d.T}")
    p.add_argument("--cell", choices=tuple(CELLS), default=d.cell, help=f"default {d.cell}")
    p.add_argument("--init", choices=INITS, default=d.init,
                   help=f"gate-bias initialisation (default {d.init})")
    p.add_argument("--hidden", type=positive_int, default=d.hidden,
                   help=f"hidden units (default {d.hidden})")
    p.add_argument("--steps", type=positive_int, default=d.steps,
                   help=f"most training steps (default {d.steps})")
    p.add_argument("--batch", type=positive_int, default=d.batch,
                   help=f"sequences per step (default {d.batch})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    p.add_argument("--clip", type=non_negative_float, default=d.clip,
                   help=f"clip the global gradient L2 norm to this (0: off; default {d.clip})")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed of weights, training data and test set (default 0)")
    p.add_argument("--eval-every", type=positive_int, default=d.eval_every, dest="eval_every",
                   help=f"steps between test-set evaluations (default {d.eval_every})")
    p.add_argument("--test-size", type=positive_int, default=d.test_size, dest="test_size",
                   help=f"test sequences (default {d.test_size})")
    p.add_argument("--dtype", choices=("float32", "float64"), default=d.dtype)
    p.add_argument("--stop-when-solved", action=argparse.BooleanOptionalAction,
                   default=d.stop_when_solved, dest="stop_when_solved",
                   help="stop at the first evaluation that meets the criterion (default: yes)")
    p.add_argument("--csv", metavar="FILE",
                   help="write the learning curve: step, train_loss, test metric")
    p.add_argument("--json", metavar="FILE",
                   help="write the resolved config, final metrics and learning curve")
    p.add_argument("--save", metavar="FILE.safetensors",
                   help="write the trained model (safetensors, atomically; the config and "
                   "final metrics in its metadata) for `rnnlab gradflow --weights FILE`")
    p.add_argument("--out", metavar="DIR",
                   help="a run directory: checkpoint/ (after each evaluation and periodically), "
                   "config.json and metrics.jsonl; Ctrl-C or SIGTERM saves and exits")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly where it stopped (its saved "
                   "configuration; the other options are not used)")
    add_save_options(p)
    p.set_defaults(func=longdep_main)
    return bench


def longdep_main(args: argparse.Namespace) -> int:
    """Run one configuration, write the files asked for, print the summary line last."""
    names = {f.name for f in fields(LongDepConfig)}
    if args.resume:
        if args.out is None:
            raise UserError("--resume continues the run in --out: give --out DIR")
        cfg = saved_config(args.out)
    else:
        cfg = LongDepConfig(**{k: v for k, v in vars(args).items() if k in names})
        if args.out is not None:
            refuse_existing_run(args.out)
    for what in ("csv", "json"):  # before training, not after it
        if getattr(args, what):
            check_output_path(what, getattr(args, what))
    save_minutes = SAVE_MINUTES if args.save_minutes is None else args.save_minutes
    # SIGINT / SIGTERM: the trainer saves and says where; main exits 130 / 143
    result = train_longdep(cfg, save=args.save, out=args.out, resume=args.resume,
                           save_every=args.save_every or 0, save_minutes=save_minutes)
    metric = "test_mse" if cfg.task == "adding" else "test_acc"
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["step", "train_loss", metric])
            w.writerows((s, repr(loss), repr(m)) for s, loss, m in result["curve"])
        print(f"wrote {args.csv}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if args.save:
        print(f"wrote {args.save}")
    print(f"{result['steps']} steps in {result['wall_s']:.1f} s"
          + (f"; solved at step {result['solved_step']}" if result["solved_step"] else ""))
    print(format_last_line(result))
    return 0
