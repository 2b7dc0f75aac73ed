"""``rnnlab train speech`` and ``rnnlab transcribe``: parse, call, print."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path

from rnnlab.cli.argtypes import (
    UserError,
    add_loop_options,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    refuse_existing_run,
)

RESUME_OPTIONS = ("epochs", "max_steps", "log_every", "save_every", "save_minutes", "patience")
MODEL_OPTIONS = ("cell", "hidden", "layers", "dropout", "pool", "stack", "attn_size",
                 "bidirectional", "dtype")
FEATURE_OPTIONS = ("kind", "mels", "ceps", "deltas")


def _train_speech(args: argparse.Namespace) -> int:
    from rnnlab.data.features import FeatureConfig
    from rnnlab.models.classifier import ClassifierConfig, SequenceClassifier
    from rnnlab.tasks.speech.corpus import index_recordings, labels_of
    from rnnlab.tasks.speech.task import SpeechTask, SpeechTrainConfig, load_speech
    from rnnlab.training import Trainer

    out = Path(args.out)
    train_fields = {f.name for f in fields(SpeechTrainConfig)}
    if args.resume:
        given = [k for k in (*MODEL_OPTIONS, *FEATURE_OPTIONS, *train_fields)
                 if k not in RESUME_OPTIONS and getattr(args, k, None) is not None]
        if given or args.data:
            raise UserError("--resume continues the run with the configuration and data it "
                            "was started with; it takes only "
                            + ", ".join("--" + k.replace("_", "-") for k in RESUME_OPTIONS))
        loaded, weights, arrays = load_speech(out, best=False)
        model, fcfg, classes, state = (loaded.model, loaded.features, loaded.classes,
                                       loaded.state)
        model.train()
        opts = {**state["train_config"],
                **{k: getattr(args, k) for k in RESUME_OPTIONS if getattr(args, k) is not None}}
        cfg = SpeechTrainConfig(**opts)
        data = state["data"]
        recordings = index_recordings(data)
    else:
        refuse_existing_run(out)
        if not args.data:
            raise UserError("expected --data DIR: a directory of {label}_{speaker}_{take}.wav "
                            "recordings (e.g. ../shared/data/fsdd)")
        data = args.data
        cfg = SpeechTrainConfig(**{k: getattr(args, k) for k in train_fields
                                   if getattr(args, k, None) is not None})
        fcfg = FeatureConfig(**{k: getattr(args, k) for k in FEATURE_OPTIONS
                                if getattr(args, k) is not None})
        recordings = index_recordings(data)
        classes = labels_of(recordings)
        defaults = {"stack": 2} if cfg.task == "connected" else {}
        model_cfg = ClassifierConfig(fcfg.dim, len(classes),
                                     output="ctc" if cfg.task == "connected" else "class",
                                     **{**defaults, **{k: getattr(args, k) for k in MODEL_OPTIONS
                                                       if getattr(args, k) is not None}})
        model = SequenceClassifier(model_cfg, seed=cfg.seed)
    speakers = sorted({r.speaker for r in recordings})
    print(f"data: {data} ({len(recordings):,} recordings, {len(classes)} classes, "
          f"{len(speakers)} speakers)")
    print(f"features {fcfg} -> {fcfg.dim} per frame")
    print(f"model {model.config}")
    print(f"training {cfg}")
    task = SpeechTask(model, fcfg, recordings, classes, cfg, data,
                      progress=not args.no_progress)
    split = ", ".join(f"{len(v):,} {k}" for k, v in task.split.items())
    test = f"speaker {cfg.test_speaker}" if cfg.test_speaker else "takes 0-4 (official split)"
    print(f"recordings: {split} (test: {test})")
    print(f"{sum(p.size for p in model.parameters().values()):,} parameters; run directory {out}")
    trainer = Trainer(task, out, progress=not args.no_progress)
    if args.resume:
        trainer.restore(state, weights, arrays)
        print(f"resuming {out} at epoch {trainer.epoch}, step {trainer.step}")
    start = time.perf_counter()
    final = trainer.fit()  # SIGINT / SIGTERM: the step ends, it saves, main exits 130 / 143
    print(f"trained in {time.perf_counter() - start:.0f} s; metrics in {out / 'metrics.jsonl'}")
    if not final.get("final"):
        print(f"{out} has already finished (--epochs N to go on)")
    elif not task.ctc:
        _print_confusion(task, out)
    return 0


def _print_confusion(task, out: Path) -> None:
    from rnnlab.io.atomic import atomic_write_text
    from rnnlab.tasks.speech.metrics import format_confusion

    text = format_confusion(task.confusion, task.classes)  # scored by the closing record
    print("test confusion (rows: spoken, columns: recognised)\n" + text)
    atomic_write_text(out / "confusion.txt", text + "\n")


def _transcribe(args: argparse.Namespace) -> int:
    from rnnlab.data.audio import AudioError, read_wav
    from rnnlab.data.features import features
    from rnnlab.tasks.speech.task import load_speech, recognise

    if args.plot and len(args.files) != 1:
        raise UserError(f"--plot draws one file: expected one FILE.wav, got {len(args.files)}")
    if args.plot:
        from rnnlab.plots import pyplot

        pyplot()  # fail now, not after the work, when matplotlib is missing
    loaded, _, _ = load_speech(args.checkpoint)
    model, fcfg = loaded.model, loaded.features
    beam = args.beam if args.beam is not None else loaded.train.beam
    failed = 0
    for name in args.files:
        try:
            x, _ = read_wav(name, rate=fcfg.rate, max_seconds=args.max_seconds)
            feats = features(x, fcfg).astype(model.dtype, copy=False)
        except (AudioError, ValueError) as err:  # this file: said, and the others go on
            said = str(err)
            print(f"rnnlab: error: {said if name in said else f'{name}: {said}'}",
                  file=sys.stderr)
            failed += 1
            continue
        [result] = recognise(model, [feats], beam=beam if loaded.ctc else 0)
        text = "".join(loaded.classes[k] for k in result["labels"])
        print(f"{name}\t{text}\t{result['confidence']:.3f}", flush=True)
        if args.plot:
            from rnnlab.tasks.speech.report import plot_transcription

            lp, _ = model.frame_log_probs(feats[:, None, :])
            plot_transcription(x, fcfg, lp[:, 0], model.config.stack, loaded.classes, text,
                               args.plot, blank=model.config.blank, title=f"{name}: {text!r}")
            print(f"wrote {args.plot}", file=sys.stderr)
    return 1 if failed else 0


def add_speech_parsers(tsub, sub) -> None:
    """``rnnlab train speech`` (under ``train``'s subparsers ``tsub``) and ``rnnlab
    transcribe``."""
    from rnnlab.data.features import KINDS, FeatureConfig
    from rnnlab.models.classifier import CELLS, POOLS, ClassifierConfig
    from rnnlab.tasks.speech.task import TASKS, SpeechTrainConfig

    m = {f.name: f.default for f in fields(ClassifierConfig)}
    fc = FeatureConfig()
    t = SpeechTrainConfig()
    p = tsub.add_parser(
        "speech", help="spoken-word recognition: isolated words, or connected digits with CTC",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a recogniser on a directory of {label}_{speaker}_{take}.wav "
        "recordings (the Free Spoken Digit Dataset's naming). Each file becomes frames of "
        "features (MFCCs with deltas, or log-mel filterbanks; 25 ms every 10 ms, normalised "
        "per utterance), read by a stacked (Bi)LSTM or GRU.\n\n"
        "  --task digits     one label per recording: the states are pooled (mean, last, "
        "attention) into a softmax\n"
        "  --task connected  utterances of 1-7 recordings joined with pauses, gains and noise, "
        "made anew each epoch; a per-frame softmax with a blank, trained with CTC, decoded "
        "greedily or by prefix beam search\n\n"
        "Test: takes 0-4 (the official split), or --test-speaker S (every recording of S; the "
        "model never heard S). --valid of the rest picks the model kept.\n\n"
        "Examples:\n  rnnlab train speech --data ../shared/data/fsdd --task digits --out "
        "runs/digits\n  rnnlab train speech --data ../shared/data/fsdd --task connected --out "
        "runs/ctc\n  rnnlab transcribe --checkpoint runs/ctc utterance.wav --plot heard.png")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly where it stopped")
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="DIR", help="the recordings (a directory, or one with a "
                   "recordings/ folder)")
    g.add_argument("--task", choices=TASKS, help=f"default {t.task}")
    g.add_argument("--test-speaker", dest="test_speaker", metavar="S",
                   help="hold out every recording of speaker S as test (leave-one-speaker-out)")
    g.add_argument("--valid", type=probability, help=f"share of the training recordings held "
                   f"out to pick the model (default {t.valid:g}; 0: keep the last)")
    g.add_argument("--utterances", type=positive_int,
                   help=f"connected: new training utterances per epoch (default {t.utterances})")
    g.add_argument("--eval-utterances", type=positive_int, dest="eval_utterances",
                   help=f"connected: validation and test utterances (default "
                   f"{t.eval_utterances})")
    g.add_argument("--max-len", type=positive_int, dest="max_len",
                   help=f"connected: at most N recordings per utterance (default {t.max_len})")
    g.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                   help="train on the recordings as they are (default: each epoch perturbs "
                   "them: speed 0.9-1.1, noise 15-40 dB under the signal, silence around, and "
                   "SpecAugment's time and band masks)")
    g = p.add_argument_group("features")
    g.add_argument("--features", choices=KINDS, dest="kind", help=f"default {fc.kind}")
    g.add_argument("--mels", type=positive_int, help=f"mel filters (default {fc.mels})")
    g.add_argument("--ceps", type=positive_int, help=f"cepstral coefficients kept (default "
                   f"{fc.ceps})")
    g.add_argument("--deltas", type=int, choices=(0, 1, 2),
                   help=f"append deltas (1) and delta-deltas (2) (default {fc.deltas})")
    g = p.add_argument_group("model")
    g.add_argument("--cell", choices=tuple(CELLS), help=f"default {m['cell']}")
    g.add_argument("--pool", choices=POOLS, help=f"digits: how the states become one vector "
                   f"(default {m['pool']})")
    for name, kind, what in (("hidden", positive_int, "units per direction"),
                             ("layers", positive_int, "stacked layers"),
                             ("dropout", probability, "between layers and before the head"),
                             ("attn_size", positive_int, "width of attention pooling's scores")):
        g.add_argument(f"--{name.replace('_', '-')}", type=kind, dest=name,
                       help=f"{what} (default {m[name]})")
    g.add_argument("--stack", type=positive_int, help="frames stacked into one step: k times "
                   "fewer steps (default 2 for connected, else 1)")
    g.add_argument("--unidirectional", dest="bidirectional", action="store_false", default=None,
                   help="read forward only (default: bidirectional)")
    g.add_argument("--dtype", choices=["float32", "float64"], help="default float32")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=positive_int, help=f"default {t.epochs}")
    g.add_argument("--batch-size", type=positive_int, dest="batch_size",
                   help=f"utterances per step, grouped by length (default {t.batch_size})")
    g.add_argument("--lr", type=positive_float, help=f"Adam learning rate (default {t.lr:g}; "
                   "halved when validation stalls)")
    g.add_argument("--clip", type=non_negative_float, help=f"default {t.clip:g}")
    g.add_argument("--patience", type=non_negative_int,
                   help=f"epochs without a better validation score before stopping (default "
                   f"{t.patience}; 0: never)")
    g.add_argument("--beam", type=positive_int, help=f"connected: beam width of the final test "
                   f"decoding (default {t.beam})")
    add_loop_options(g)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_train_speech)

    tr = sub.add_parser(
        "transcribe", help="recognise WAV files with a trained speech model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print one line per file: FILE<TAB>LABELS<TAB>confidence. An isolated-word "
        "model gives one label and its probability; a CTC model the label string (e.g. 4096) "
        "and the probability of that string summed over every alignment. Files at any sample "
        "rate are resampled to the model's; a file that cannot be read is reported on stderr "
        "and the others go on (exit status 1).\n\n"
        "Example:\n  rnnlab transcribe --checkpoint runs/ctc a.wav b.wav\n"
        "  rnnlab transcribe --checkpoint runs/ctc a.wav --plot a.png")
    tr.add_argument("files", nargs="+", metavar="FILE.wav")
    tr.add_argument("--checkpoint", required=True, metavar="RUN", help="run directory")
    tr.add_argument("--beam", type=positive_int, help="CTC: prefix beam width (1: greedy; "
                    "default: the run's)")
    tr.add_argument("--max-seconds", type=positive_float, dest="max_seconds", default=120.0,
                    help="refuse longer files (default 120; memory grows with the length)")
    tr.add_argument("--plot", metavar="OUT.png", help="the spectrogram and the frame "
                    "posteriors (CTC: where each label was emitted); one file only")
    tr.set_defaults(func=_transcribe)
