"""``rnnlab gradcheck``: parse, call :mod:`rnnlab.inside.gradcheck`, print."""

from __future__ import annotations

import argparse

from rnnlab.cli.argtypes import positive_int
from rnnlab.inside.gradcheck import KINDS, format_report, gradcheck_layer


def _lengths(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 5,3,2, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive lengths, got {text!r}")
    return values


DESCRIPTION = """\
Build one RNN/LSTM/GRU layer in float64, take the loss
    L = sum(out * R) + sum(h_n * R_h)  (+ sum(c_n * R_c) for LSTM)
with fixed random R, and compare the gradients of x, h0 (c0) and every parameter from the
layer's hand-written backward with central differences, entry by entry. Exit status 0 if every
tensor passes (|analytic - numeric| <= 1e-8 + 1e-6 |numeric|), 1 otherwise."""


def add_gradcheck_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``gradcheck`` to an ``add_subparsers()`` object; returns its parser."""
    p = subparsers.add_parser(
        "gradcheck", help="check a layer's hand-written gradients against central differences",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DESCRIPTION,
        epilog="Examples:\n  rnnlab gradcheck --cell gru\n"
        "  rnnlab gradcheck --cell lstm --layers 2 --bidirectional --lengths 5,3,2")
    p.add_argument("--cell", choices=sorted(KINDS), default="lstm", help="default lstm")
    p.add_argument("--layers", type=positive_int, default=1, metavar="N",
                   help="stacked layers (default 1)")
    p.add_argument("--hidden", type=positive_int, default=4, metavar="H",
                   help="hidden units (default 4)")
    p.add_argument("--input-size", type=positive_int, default=3, dest="input_size", metavar="D",
                   help="input features (default 3)")
    p.add_argument("--steps", type=positive_int, dest="T", metavar="T",
                   help="time steps T (default 5, or the longest of --lengths)")
    p.add_argument("--batch", type=positive_int, dest="B", metavar="B",
                   help="sequences B (default 3, or the number of --lengths)")
    p.add_argument("--bidirectional", action="store_true")
    p.add_argument("--batch-first", action="store_true", dest="batch_first",
                   help="x is (B, T, D) instead of (T, B, D)")
    p.add_argument("--lengths", type=_lengths, metavar="N,N,...",
                   help="variable sequence lengths, one per sequence, e.g. 5,3,2")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of weights, inputs and R (default 0)")
    p.add_argument("--eps", type=float, default=1e-6, help="finite-difference step (default 1e-6)")
    p.add_argument("--probe", type=positive_int, metavar="N",
                   help="check at most N random entries per tensor (default: all)")
    p.set_defaults(func=gradcheck_main)
    return p


def gradcheck_main(args: argparse.Namespace) -> int:
    """Run the check and print the table. Returns 0 if every tensor passes, 1 otherwise."""
    lengths = args.lengths
    T = args.T or (max(lengths) if lengths else 5)
    B = args.B or (len(lengths) if lengths else 3)
    report = gradcheck_layer(args.cell, args.input_size, args.hidden, args.layers,
                             args.bidirectional, args.batch_first, lengths, T, B, args.seed,
                             eps=args.eps, max_entries=args.probe)
    print(format_report(report))
    return 0 if report.passed else 1
