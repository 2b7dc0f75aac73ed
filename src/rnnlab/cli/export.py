"""``rnnlab export``: a trained run as an ONNX model plus a JSON that describes it.

    rnnlab export --checkpoint RUN --out model.onnx [--opset 17]

Writes ``model.onnx`` and ``model.json`` (vocabulary, settings, input and output names). The
tasks that export, and the library function that does it, are in ``EXPORTERS``; a checkpoint of
another kind is refused by name.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from rnnlab.cli.argtypes import UserError, positive_int

# checkpoint kind -> (module, function(run, out, opset) -> the paths written)
EXPORTERS = {
    "language_model": ("rnnlab.tasks.lm.export", "export_lm"),
    "tagger": ("rnnlab.tasks.tagging_export", "export_tagger"),
    "forecaster": ("rnnlab.tasks.forecast.export", "export_forecaster"),
    "speech": ("rnnlab.tasks.speech.export", "export_speech"),
    "seq2seq": ("rnnlab.tasks.seq2seq.export", "export_seq2seq"),
}


def _kind(run: str) -> str:
    from rnnlab.io.checkpoint import load_checkpoint, run_checkpoint

    _, state, _ = load_checkpoint(run_checkpoint(run))
    return str(state.get("kind"))


def _export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix != ".onnx":
        raise UserError(f"--out: expected a file name ending in .onnx, got {args.out!r}")
    kind = _kind(args.checkpoint)
    if kind not in EXPORTERS:
        raise UserError(f"--checkpoint: expected a checkpoint of {', '.join(EXPORTERS)} (the "
                        f"tasks exportable today), got a {kind} checkpoint")
    module, function = EXPORTERS[kind]
    export = getattr(importlib.import_module(module), function)
    written = export(args.checkpoint, out, opset=args.opset)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def add_export_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="write a trained model as ONNX (run it with ONNX Runtime, no rnnlab)",
        description="Write a trained run as an ONNX model and, beside it, a JSON with the "
        "vocabulary and the input/output names. Exportable today: the language model (ids and "
        "state in, logits and state out, for step-by-step generation) and the tagger (word "
        "and character ids in, tag scores out; the CRF's scores in the JSON) and the forecaster "
        "(a window of features in, the forecast and its intervals out), the speech classifier and "
        "CTC model (feature frames in, log-posteriors out) and the encoder-decoder (two graphs: "
        "STEM.encoder.onnx and the one-step STEM.decoder.onnx).")
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="run directory")
    p.add_argument("--out", required=True, metavar="FILE.onnx", help="the model file to write")
    p.add_argument("--opset", type=positive_int, default=17,
                   help="ONNX opset version (default 17)")
    p.set_defaults(func=_export)
