"""The ``rnnlab`` command line: this file builds the parser from one module per command group
(``lm``, ``seq2seq``, ``explain``, ``gradcheck``, ``gradflow``, ``bench``) and turns errors into
one line and an exit status. Library code lives below ``rnnlab.cli``.

    rnnlab train lm [--preset NAME] [options]    train a language model, then print samples
    rnnlab eval --checkpoint RUN --data PATH     perplexity of a split
    rnnlab generate --checkpoint RUN --prompt P  continue a prompt
    rnnlab train seq2seq --data addition         an encoder-decoder (attention, peeky, reversed)
    rnnlab translate --checkpoint RUN "16+75"    decode with a trained encoder-decoder
    rnnlab explain [--lstm|--gru|--rnn] [--json]  one time step with every number, both ways
    rnnlab gradcheck --cell lstm ...             numerical vs analytic gradients of a layer
    rnnlab gradflow [--experiment SET]           how far back gradients reach (vanishing/exploding)
    rnnlab bench longdep --task adding --T 100   adding problem / copy task at lag T: solved?
    rnnlab train forecast --data F.csv ...       an LSTM/GRU forecaster with 80%/95% intervals
    rnnlab forecast --checkpoint RUN --csv OUT   forecast the steps after a series
    rnnlab eval forecast --checkpoint RUN ...    rolling forecasts scored beside the baselines
    rnnlab backtest --checkpoint RUN ...         rolling-origin evaluation (optionally refit)
    rnnlab train speech --data DIR --task T      spoken digits: isolated, or connected (CTC)
    rnnlab transcribe --checkpoint RUN F.wav     recognise recordings (any sample rate)
    rnnlab export --checkpoint RUN --out M.onnx  a trained run as ONNX (+ M.json) for ONNX Runtime
    rnnlab demo                                  a tiny tour of the engine
"""

from __future__ import annotations

import argparse
import sys

from rnnlab.cli.argtypes import UserError, add_device_option, cpu_only, interrupted_exit_code


def _demo(args: argparse.Namespace) -> int:
    from rnnlab.inside import demo

    demo.run(steps=args.steps, hidden=args.hidden, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnlab",
        description="Recurrent neural networks from first principles (NumPy, hand-written BPTT).",
        epilog="Run 'rnnlab COMMAND --help' for the options of each command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = sub.add_parser("train", help="train a model", description="Train a model.")
    tsub = train.add_subparsers(dest="what", metavar="MODEL", required=True)
    from rnnlab.cli.forecast import add_forecast_parsers
    from rnnlab.cli.lm import add_lm_parsers
    from rnnlab.cli.seq2seq import add_seq2seq_parsers
    from rnnlab.cli.speech import add_speech_parsers
    from rnnlab.cli.tagging import add_tagging_parsers

    add_lm_parsers(tsub, sub)
    add_seq2seq_parsers(tsub, sub)
    add_tagging_parsers(tsub, sub)
    add_forecast_parsers(tsub, sub)
    add_speech_parsers(tsub, sub)
    for name, p in tsub.choices.items():  # every trainer takes --device; lm alone runs on cuda
        if name != "lm":
            add_device_option(p, runs_on_cuda=False)
            p.set_defaults(func=cpu_only(p.get_default("func"), f"rnnlab train {name}"))

    demo = sub.add_parser(
        "demo", help="train a small LSTM to continue a sine wave, then show its gates",
        description="Train LSTM(1, H) + a linear readout with SGD on noisy sine waves (next-value "
        "prediction), report test MSE against the repeat-last-value baseline, and print the "
        "gate activations of a few steps.",
    )
    demo.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    demo.add_argument("--hidden", type=int, default=32, help="LSTM hidden size (default 32)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=_demo)

    from rnnlab.cli.bench import add_bench_parser
    from rnnlab.cli.explain import add_explain_parser
    from rnnlab.cli.export import add_export_parser
    from rnnlab.cli.gradcheck import add_gradcheck_parser
    from rnnlab.cli.gradflow import add_gradflow_parser

    add_explain_parser(sub)
    add_gradcheck_parser(sub)
    add_gradflow_parser(sub)
    add_bench_parser(sub)
    add_export_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rnnlab.training.distributed import launched_size

    if launched_size() > 1:  # mpiexec -n K: data-parallel
        return _main_parallel(args)
    return _run(args)


def _run(args: argparse.Namespace, ranks=None) -> int:
    """Run the command; errors become one line and an exit status. With ``ranks`` (one rank of
    a data-parallel job) an error that this rank may have met alone ends every rank."""
    from rnnlab.io.checkpoint import CheckpointError
    from rnnlab.nn.backend import DeviceUnavailable
    from rnnlab.nn.memory import NotEnoughMemory
    from rnnlab.plots import PlotsUnavailable
    from rnnlab.training import DistributedError, Interrupted, TrainingDiverged

    def fail(err: BaseException, code: int) -> int:
        where = f"rank {ranks.rank}: " if ranks is not None else ""
        print(f"rnnlab: error: {where}{err}", file=sys.stderr)
        if ranks is not None:
            ranks.abort(code)  # the others may be waiting for this rank in a collective
        return code

    try:
        return args.func(args)
    except DistributedError as err:  # raised on every rank alike: each exits, none waits
        print(f"rnnlab: error: {err}", file=sys.stderr)
        return 2
    except (UserError, ValueError, TypeError, OSError, CheckpointError, PlotsUnavailable,
            NotEnoughMemory, DeviceUnavailable) as err:  # a configuration too big, no GPU
        return fail(err, 2)
    except TrainingDiverged as err:
        return fail(err, 3)
    except KeyboardInterrupt as err:  # a training command has saved and said where
        agreed = isinstance(err, Interrupted) and not err.at_once  # by every rank: saved once
        if ranks is not None and not agreed:
            return fail(err, interrupted_exit_code(err))
        return interrupted_exit_code(err)


def _main_parallel(args: argparse.Namespace) -> int:
    """One rank of ``mpiexec -n K rnnlab ...``: rank 0 prints, the others only their errors.
    An error on one rank ends the whole job (MPI_Abort), never leaving the other ranks waiting
    in a collective; only the errors every rank raises alike (DistributedError: configurations
    that differ, another rank count) and an agreed stop (a signal: saved once, by rank 0) end
    each rank on its own."""
    import os
    import traceback

    from rnnlab.training import DistributedError, world

    try:
        ranks = world()  # imports mpi4py
    except DistributedError as err:  # not installed: every rank says so and exits
        print(f"rnnlab: error: {err}", file=sys.stderr)
        return 2
    if not ranks.is_root:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the rest of the process)
    try:
        return _run(args, ranks)
    except BaseException:  # a bug: its traceback, then every rank ends
        print(f"rnnlab: rank {ranks.rank} of {ranks.size} failed; ending every rank",
              file=sys.stderr)
        traceback.print_exc()
        ranks.abort(1)
        raise
