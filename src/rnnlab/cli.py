"""The ``rnnlab`` command line. Library code lives elsewhere; this file only parses and calls."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from rnnlab import demo

    demo.run(steps=args.steps, hidden=args.hidden, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnlab",
        description="Recurrent neural networks from first principles (NumPy, hand-written BPTT).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = sub.add_parser(
        "demo",
        help="train a small LSTM to continue a sine wave, then show its gates",
        description="Train LSTM(1, H) + a linear readout with SGD on noisy sine waves (next-value "
        "prediction), report test MSE against the repeat-last-value baseline, and print the "
        "gate activations of a few steps. Takes well under a minute on 2 CPU cores.",
    )
    demo.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    demo.add_argument("--hidden", type=int, default=32, help="LSTM hidden size (default 32)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as err:
        print(f"rnnlab: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
