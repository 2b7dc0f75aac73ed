"""``rnnlab gradflow``: parse, call :mod:`rnnlab.inside.gradflow`, print."""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnlab.cli.argtypes import positive_int
from rnnlab.inside.gradflow import (
    CELLS,
    EXPERIMENTS,
    TRAINED_FLOW_EXAMPLE,
    format_table,
    plot,
    sweep,
    trained_flow,
    write_csv,
)
from rnnlab.plots import pyplot

DESCRIPTION = """\
Measure how far back through time a gradient reaches in a plain RNN, an LSTM and a GRU.

Each cell runs T steps over random inputs; the loss looks at the LAST hidden state only,
L = sum(h_T * R). Backpropagation through time then gives dL/dh_t for every earlier step t,
and the table shows its size (mean over the batch of the L2 norm) at distance d = T - t:
how much of the loss's signal reaches a state d steps back. For the LSTM, dL/dc_t is the
gradient carried by the cell state.

Reading the numbers: a value that shrinks by orders of magnitude with d has VANISHED (the
model cannot learn dependencies that long); one that grows has EXPLODED (one step of SGD
would be huge). 0 means it fell below float64's range (1e-308).

Experiments:
  cells   rnn, lstm, gru at PyTorch's default initialisation
  radius  plain RNN with W_hh rescaled to spectral radius 0.5, 0.9, 1.0, 1.1, 1.5, 3.0
          (below 1: vanishing; 1.5: near the edge, it wanders or decays slowly,
          depending on --hidden and --seed; 3: explodes)
  forget  LSTM with forget-gate bias 0, 1, 3 (f near 1 keeps the cell-state path open)
  clip    plain RNN at radius 1.5 and 3, each without and with per-step clipping of the
          carried gradient to norm 1 (an illustration: clipping bounds an explosion; it
          cannot bring back a gradient that has vanished)

After training (--weights FILE, a file from `rnnlab bench longdep --save`): the same
measurement, same loss L = sum(h_T * R) on the last hidden state, for the trained cell and for
the same architecture at its initialisation (the saved run's seed and --init), both on inputs
of the task it was trained on (adding or copy). --T sets the task's lag (default: the one it
was trained on) and --seed the inputs and R; --experiment, --cells and --hidden do not apply.
"""




def _cell_list(text: str) -> tuple[str, ...]:
    cells = tuple(c.strip() for c in text.split(",") if c.strip())
    bad = [c for c in cells if c not in CELLS]
    if bad or not cells:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(CELLS)}, got {text!r}")
    return cells


def add_gradflow_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``gradflow`` to an ``add_subparsers()`` object; returns its parser."""
    p = subparsers.add_parser(
        "gradflow", help="how far back gradients reach in RNN, LSTM and GRU (vanishing/exploding)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  rnnlab gradflow\n  rnnlab gradflow --experiment radius --T 300\n"
        "  rnnlab gradflow --csv gradflow.csv --plot gradflow.png\n"
        "After training on a long-lag task (trained vs. init):\n" + TRAINED_FLOW_EXAMPLE)
    p.add_argument("--cells", type=_cell_list, default=None,
                   help="cells of the 'cells' experiment (default rnn,lstm,gru)")
    p.add_argument("--T", type=positive_int, default=None, dest="T",
                   help="sequence length: the largest distance measured (default 1000; with "
                   "--weights the task's lag, default the one it was trained on)")
    p.add_argument("--hidden", type=positive_int, default=None,
                   help="hidden units (default 32)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of weights and inputs (default 0; with --weights: of the inputs "
                   "and R only)")
    p.add_argument("--experiment", choices=("all", *EXPERIMENTS), default=None,
                   help="which comparison set to run (default all)")
    p.add_argument("--weights", metavar="FILE",
                   help="a model saved by `rnnlab bench longdep --save`: measure it trained and "
                   "at its initialisation, on inputs of its task")
    p.add_argument("--csv", metavar="FILE", help="write every curve, one row per distance")
    p.add_argument("--plot", metavar="FILE.png", help="save a log-scale plot (needs matplotlib)")
    p.set_defaults(func=gradflow_main)
    return p


def gradflow_main(args: argparse.Namespace) -> int:
    """Run the sweep, print the table, write the CSV and plot if asked. Returns the exit status."""
    if args.plot:
        pyplot()  # fail before the sweep, not after it
    if args.weights is not None:
        results = _trained_main(args)
    else:
        experiment = args.experiment or "all"
        experiments = EXPERIMENTS if experiment == "all" else (experiment,)
        cells = args.cells or ("rnn", "lstm", "gru")
        T, hidden = args.T or 1000, args.hidden or 32
        print(f"gradflow: experiments {', '.join(experiments)}; cells {','.join(cells)}; "
              f"T={T} hidden={hidden} input_size=8 batch=16 seed={args.seed} float64")
        results = sweep(experiments, cells=cells, T=T, hidden=hidden, seed=args.seed)
    print(format_table(results))
    if args.csv:
        write_csv(results, Path(args.csv))
        print(f"wrote {args.csv}")
    if args.plot:
        plot(results, Path(args.plot))
        print(f"wrote {args.plot}")
    return 0


def _trained_main(args: argparse.Namespace) -> list[dict]:
    """--weights: check the options, run :func:`trained_flow`, print the header line."""
    ignored = [flag for flag, value in (("--experiment", args.experiment),
                                        ("--cells", args.cells), ("--hidden", args.hidden))
               if value is not None]
    if ignored:
        raise ValueError(f"--weights: {', '.join(ignored)} cannot be combined with it (they "
                         f"choose the random-weight experiments; the saved file fixes the cell "
                         f"and its size); use --T and --seed to choose the inputs")
    results = trained_flow(args.weights, T=args.T, seed=args.seed)
    c = results[0]["config"]
    run, summary = c["longdep"], c["result"]
    scores = "".join(f" {k}={summary[k]:.4g}" for k in ("test_mse", "test_acc") if k in summary)
    print(f"gradflow: weights {args.weights}: {c['cell']} hidden={c['hidden']} trained on "
          f"{c['task']} T={run['T']} ({summary.get('steps', '?')} steps, init {run['init']}, "
          f"seed {run['seed']}, {run['dtype']}){scores}; inputs: {c['task']} T={c['lag']} "
          f"({c['T']} steps) batch={c['batch']} seed={c['seed']} float64; "
          f"L = sum(h_T * R)")
    return results
