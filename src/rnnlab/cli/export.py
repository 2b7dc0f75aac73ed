"""``rnnlab export``: a trained run as an ONNX model plus a JSON that describes it.

    rnnlab export --checkpoint RUN --out model.onnx [--opset 17]

Writes ``model.onnx`` and ``model.json`` (vocabulary, settings, input and output names), all
the files of the export or none of them. The tasks that export, and the library function
that does it, are in :func:`exporters`; a checkpoint of another kind is refused by name.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from rnnlab.cli.argtypes import UserError, positive_int


def exporters() -> dict[str, Callable]:
    """Checkpoint kind -> its exporter, ``export(run, out, opset) -> the paths written``."""
    from rnnlab.tasks.forecast.export import export_forecaster
    from rnnlab.tasks.lm.export import export_lm
    from rnnlab.tasks.seq2seq.export import export_seq2seq
    from rnnlab.tasks.speech.export import export_speech
    from rnnlab.tasks.tagging_export import export_tagger

    return {"language_model": export_lm, "tagger": export_tagger,
            "forecaster": export_forecaster, "speech": export_speech,
            "seq2seq": export_seq2seq}


def _kind(run: str) -> str:
    from rnnlab.io.checkpoint import load_checkpoint, run_checkpoint

    _, state, _ = load_checkpoint(run_checkpoint(run))
    return str(state.get("kind"))


def _export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix != ".onnx":
        raise UserError(f"--out: expected a file name ending in .onnx, got {args.out!r}")
    kind, known = _kind(args.checkpoint), exporters()
    if kind not in known:
        raise UserError(f"--checkpoint: expected a checkpoint of {', '.join(known)} (the "
                        f"tasks exportable today), got a {kind} checkpoint")
    written = known[kind](args.checkpoint, out, opset=args.opset)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def add_export_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="write a trained model as ONNX (run it with ONNX Runtime, no rnnlab)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a trained run as an ONNX model and, beside it, a JSON with the "
        "vocabularies,\nsettings and input/output names, for any run of:\n"
        "  lm        ids and state in; logits and state out (step-by-step generation)\n"
        "  tagger    word and character ids in; tag scores out (a CRF's scores in the JSON)\n"
        "  forecast  a window of step features in; the forecast and its intervals out\n"
        "  speech    feature frames in; log-posteriors out (per utterance, or per step: CTC)\n"
        "  seq2seq   STEM.encoder.onnx and a one-step STEM.decoder.onnx (no STEM.onnx)\n\n"
        "Example:\n  rnnlab export --checkpoint runs/shakespeare --out lm.onnx")
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="run directory")
    p.add_argument("--out", required=True, metavar="FILE.onnx", help="the model file to write")
    p.add_argument("--opset", type=positive_int, default=17,
                   help="ONNX opset version (default 17)")
    p.set_defaults(func=_export)
