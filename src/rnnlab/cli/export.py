"""``rnnlab export``: a trained run as an ONNX model plus a JSON that describes it.

    rnnlab export --checkpoint RUN --out model.onnx [--opset 17]

Writes ``model.onnx`` and ``model.json`` (vocabulary, settings, input and output names). Today
the language model is exported; the other tasks' checkpoints are refused by name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnlab.cli.argtypes import UserError, positive_int

EXPORTABLE = ("language_model",)


def _kind(run: str) -> str:
    from rnnlab.io.checkpoint import load_checkpoint, run_checkpoint

    _, state, _ = load_checkpoint(run_checkpoint(run))
    return str(state.get("kind"))


def _export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix != ".onnx":
        raise UserError(f"--out: expected a file name ending in .onnx, got {args.out!r}")
    kind = _kind(args.checkpoint)
    if kind not in EXPORTABLE:
        raise UserError(f"--checkpoint: expected a checkpoint of {', '.join(EXPORTABLE)} (the "
                        f"tasks exportable today), got a {kind} checkpoint")
    from rnnlab.tasks.lm.export import export_lm

    json_path = export_lm(args.checkpoint, out, opset=args.opset)
    print(f"wrote {out} and {json_path}")
    return 0


def add_export_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="write a trained model as ONNX (run it with ONNX Runtime, no rnnlab)",
        description="Write a trained run as an ONNX model and, beside it, a JSON with the "
        "vocabulary and the input/output names. Exportable today: the language model (ids and "
        "state in, logits and state out, for step-by-step generation).")
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="run directory")
    p.add_argument("--out", required=True, metavar="FILE.onnx", help="the model file to write")
    p.add_argument("--opset", type=positive_int, default=17,
                   help="ONNX opset version (default 17)")
    p.set_defaults(func=_export)
