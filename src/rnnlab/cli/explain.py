"""``rnnlab explain``: parse, call :mod:`rnnlab.inside.explain`, print."""

from __future__ import annotations

import argparse

from rnnlab.cli.argtypes import positive_int
from rnnlab.inside.explain import explain, format_explain, load_example, random_example, to_json

DESCRIPTION = """\
Show one recurrent time step, forward and backward, with every intermediate number, in lecture
notation: the gates act on z = [h_prev, x] (h_prev first) through one (H, H+D) matrix each, a
softmax readout W_y h + b_y gives the loss -log probs[target], and backward prints dL/d of every
quantity down to the weights, x, h_prev and c_prev. The numbers are computed by rnnlab's own cell
functions (the lecture weights are stacked into PyTorch's layout), so they are the library's.

Without --input a random example is used (numbers rounded to 2 decimals). An input file is a JSON
object with exactly these keys ("cell" is optional):
  LSTM  W_f W_i W_g W_o (H, H+D), b_f b_i b_g b_o (H,), W_y (C, H), b_y (C,), x (D,) or (N, D),
        h_prev (H,), c_prev (H,), target (an int class index)
  GRU   W_r W_u W_n (H, H+D), b_r b_u b_n b_nh (H,), W_y, b_y, x, h_prev, target
        (PyTorch's GRU: n = tanh(W_n[:, H:] x + b_n + r * (W_n[:, :H] h_prev + b_nh)); u is the
        update gate, h = (1 - u) * n + u * h_prev)
  RNN   W_h (H, H+D), b_h (H,), W_y, b_y, x, h_prev, target
With --steps N (or an (N, D) x) the loss is taken at the last step and the gradient is followed
back through time, step by step."""

EPILOG = """\
Examples:
  rnnlab explain                         one LSTM step, H=2, D=3, C=3, seed 0
  rnnlab explain --gru --hidden 3
  rnnlab explain --lstm --steps 3        gradients carried back through 3 steps
  rnnlab explain --input step.json --json > numbers.json"""


def add_explain_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``explain`` to an ``add_subparsers()`` object; returns its parser."""
    p = subparsers.add_parser(
        "explain", help="one LSTM/GRU/RNN step forward and backward, every number shown",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group()
    for name in ("lstm", "gru", "rnn"):
        which.add_argument(f"--{name}", dest="cell", action="store_const", const=name,
                           help=f"explain a{'n' * (name != 'gru')} {name.upper()} step"
                           + (" (default)" if name == "lstm" else ""))
    p.add_argument("--input", metavar="FILE.json", help="the example to explain (see above)")
    p.add_argument("--seed", type=int, metavar="N", help="seed of the random example (default 0)")
    p.add_argument("--hidden", type=positive_int, metavar="H",
                   help="H of the random example (default 2)")
    p.add_argument("--input-size", type=positive_int, dest="input_size", metavar="D",
                   help="D of the random example (default 3)")
    p.add_argument("--classes", type=positive_int, metavar="C",
                   help="C of the random example (default 3)")
    p.add_argument("--steps", type=positive_int, metavar="N",
                   help="time steps, loss at the last (default 1, or the rows of the file's x)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead")
    p.set_defaults(func=explain_main, cell="lstm")
    return p


def explain_main(args: argparse.Namespace) -> int:
    """Build or load the example, explain it and print. Returns the exit status."""
    if args.input is not None:
        given = [f"--{n.replace('_', '-')}" for n in ("seed", "hidden", "input_size", "classes")
                 if getattr(args, n) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} describe a random example; they cannot be "
                             "combined with --input")
        example = load_example(args.input, args.cell)
    else:
        example = random_example(args.cell, seed=args.seed or 0, hidden=args.hidden or 2,
                                 input=args.input_size or 3, classes=args.classes or 3,
                                 steps=args.steps or 1)
    result = explain(args.cell, example, args.steps)
    print(to_json(result) if args.json else format_explain(result))
    return 0


