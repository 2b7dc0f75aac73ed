"""``rnnlab train tagger``, ``rnnlab tag`` and ``rnnlab eval tagger``: parse, call, print."""

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
MODEL_OPTIONS = ("word_dim", "char_dim", "char_hidden", "hidden", "layers", "dropout",
                 "word_dropout", "output", "dtype")


def _train_tagger(args: argparse.Namespace) -> int:
    from rnnlab.models.tagger import Tagger, TaggerConfig
    from rnnlab.tasks.tagging import (
        TaggingTask,
        TaggingTrainConfig,
        Vocabs,
        find_splits,
        load_tagger,
        read_splits,
    )
    from rnnlab.training import Trainer

    out = Path(args.out)
    if args.resume:
        given = [k for k in (*MODEL_OPTIONS, "batch_size", "lr", "clip", "min_freq", "seed",
                             "eval_batch_size") if getattr(args, k, None) is not None]
        if given or args.data or args.train or args.dev or args.test:
            raise UserError("--resume continues the run with the configuration and data it "
                            "was started with; it takes only "
                            + ", ".join("--" + k.replace("_", "-") for k in RESUME_OPTIONS))
        model, vocabs, state, weights, arrays = load_tagger(out, best=False)
        model.train()
        opts = {**state["train_config"],
                **{k: getattr(args, k) for k in RESUME_OPTIONS if getattr(args, k) is not None}}
        cfg = TaggingTrainConfig(**opts)
        paths = {k: Path(v) for k, v in state["data"].items()}
        splits = read_splits(paths)
    else:
        refuse_existing_run(out)
        paths = find_splits(args.data, args.train, args.dev, args.test)
        cfg = TaggingTrainConfig(**{f.name: getattr(args, f.name) for f in fields(
            TaggingTrainConfig) if getattr(args, f.name, None) is not None})
        splits = read_splits(paths)
        vocabs = Vocabs.build(splits["train"], cfg.min_freq)
        model_cfg = TaggerConfig(len(vocabs.words), len(vocabs.chars),
                                 {h: len(t) for h, t in vocabs.tags.items()},
                                 **{k: getattr(args, k) for k in MODEL_OPTIONS
                                    if getattr(args, k) is not None})
        model = Tagger(model_cfg, unk_id=vocabs.words.unk_id, seed=cfg.seed)
    for split, sentences in splits.items():
        words = sum(len(s.forms()) for s in sentences)
        print(f"{split}: {paths[split]} ({len(sentences):,} sentences, {words:,} words)")
    print(f"vocabularies: {len(vocabs.words):,} words, {len(vocabs.chars):,} characters, "
          + ", ".join(f"{len(t)} {h.upper()} tags" for h, t in vocabs.tags.items()))
    print(f"model {model.config}")
    print(f"training {cfg}")
    print(f"{sum(p.size for p in model.parameters().values()):,} parameters; run directory {out}")
    task = TaggingTask(model, vocabs, splits, cfg, paths)
    trainer = Trainer(task, out, progress=not args.no_progress)
    if args.resume:
        trainer.restore(state, weights, arrays)
        print(f"resuming {out} at epoch {trainer.epoch}, step {trainer.step}")
    start = time.perf_counter()
    final = trainer.fit()  # SIGINT / SIGTERM: the step ends, it saves, main exits 130 / 143
    print(f"trained in {time.perf_counter() - start:.0f} s; metrics in {out / 'metrics.jsonl'}")
    if not final.get("final"):
        print(f"{out} has already finished (--epochs N to go on)")
    return 0


def _read_text_sentences(source) -> list:
    from rnnlab.data.conllu import sentence_from_tokens
    from rnnlab.data.tokenize import tokenize_text

    sentences = []
    for i, line in enumerate(source, 1):
        tokens = tokenize_text(line)
        if tokens:
            sentences.append(sentence_from_tokens(tokens, sent_id=str(i), text=line.strip()))
    return sentences


def _tag(args: argparse.Namespace) -> int:
    from rnnlab.data.conllu import format_conllu, read_conllu
    from rnnlab.data.text import read_text
    from rnnlab.tasks.tagging import encode_all, load_tagger, predict

    model, vocabs, _, _, _ = load_tagger(args.checkpoint)
    if args.file is not None and args.text is not None:
        raise UserError("give a CoNLL-U FILE or --text FILE, not both")
    if args.file is not None:
        sentences = read_conllu(args.file)
    elif args.text is not None:
        sentences = _read_text_sentences(read_text(args.text).splitlines())
    else:
        sentences = _read_text_sentences(sys.stdin)
    if not sentences:
        raise UserError("expected at least one sentence to tag, got none")
    encoded = encode_all(sentences, vocabs, with_tags=False)
    tagged = []
    for s, p in zip(sentences, predict(model, encoded, vocabs), strict=True):
        new = {h: [vocabs.tags[h][i] for i in p[h]] for h in vocabs.tags}
        tagged.append(s.with_tags(**new))
    sys.stdout.write(format_conllu(tagged))
    return 0


def _eval_tagger(args: argparse.Namespace) -> int:
    from rnnlab.data.conllu import read_conllu
    from rnnlab.tasks.tagging import encode_all, load_tagger, predict, tag_report

    if args.data is None or args.split is not None or args.text is not None:
        raise UserError("eval tagger takes --checkpoint RUN and --data FILE.conllu (no --split "
                        "or --text)")
    model, vocabs, _, _, _ = load_tagger(args.checkpoint)
    sentences = read_conllu(args.data)
    encoded = encode_all(sentences, vocabs, args.data, log=lambda m: print(m, file=sys.stderr))
    preds = predict(model, encoded, vocabs, args.batch_size or 256)
    report = tag_report(encoded, preds, vocabs)
    print(report["text"])
    if args.plot:
        from rnnlab.plots import plot_confusion

        plot_confusion(report["confusion"], vocabs.tags["upos"], args.plot,
                       "UPOS confusion (rows: gold, normalised)", rotate=True)
        print(f"wrote {args.plot}")
    return 0


def add_tagging_parsers(tsub, sub) -> None:
    """``rnnlab train tagger`` (under ``train``'s subparsers ``tsub``) and ``rnnlab tag``."""
    from rnnlab.models.tagger import OUTPUTS, TaggerConfig
    from rnnlab.tasks.tagging import TaggingTrainConfig

    m = {f.name: f.default for f in fields(TaggerConfig) if f.name not in ("heads",)}
    t = TaggingTrainConfig()
    p = tsub.add_parser(
        "tagger", help="a BiLSTM part-of-speech tagger (UPOS and XPOS) on CoNLL-U",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a part-of-speech tagger on a Universal Dependencies treebank: word "
        "embeddings (rare words as <unk>, word dropout) and a character BiLSTM per word, a "
        "stacked BiLSTM over the sentence, and one head per tag set (UPOS, XPOS), softmax or a "
        "linear-chain CRF. The model with the best dev UPOS accuracy is kept; training stops "
        "after --patience epochs without a better one.\n\n"
        "Examples:\n  rnnlab train tagger --data ../shared/data/ud-english-ewt --out runs/pos\n"
        "  rnnlab train tagger --data ../shared/data/ud-english-ewt --output crf --out runs/crf\n"
        "  rnnlab tag --checkpoint runs/pos test.conllu > tagged.conllu\n"
        "  echo 'I saw her duck .' | rnnlab tag --checkpoint runs/pos\n"
        "  rnnlab eval tagger --checkpoint runs/pos --data test.conllu --plot confusion.png")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly where it stopped")
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="DIR", help="a UD directory with *-ud-train.conllu, "
                   "*-ud-dev.conllu and *-ud-test.conllu")
    for split in ("train", "dev", "test"):
        g.add_argument(f"--{split}", metavar="FILE", help=f"the {split} file (instead of, or "
                       "overriding, the one in --data)")
    g.add_argument("--min-freq", type=positive_int, dest="min_freq",
                   help=f"words seen fewer times in train are <unk> (default {t.min_freq})")
    g = p.add_argument_group("model")
    g.add_argument("--output", choices=OUTPUTS, help=f"default {m['output']}")
    for name, kind in (("word_dim", positive_int), ("char_dim", positive_int),
                       ("char_hidden", positive_int), ("hidden", positive_int),
                       ("layers", positive_int), ("dropout", probability),
                       ("word_dropout", probability)):
        g.add_argument(f"--{name.replace('_', '-')}", type=kind, dest=name,
                       help=f"default {m[name]}")
    g.add_argument("--dtype", choices=["float32", "float64"], help="default float32")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=positive_int, help=f"default {t.epochs}")
    g.add_argument("--batch-size", type=positive_int, dest="batch_size",
                   help=f"sentences per step, grouped by length (default {t.batch_size})")
    g.add_argument("--lr", type=positive_float, help=f"Adam learning rate (default {t.lr:g})")
    g.add_argument("--clip", type=non_negative_float, help=f"default {t.clip:g}")
    g.add_argument("--patience", type=non_negative_int,
                   help=f"epochs without a better dev accuracy before stopping (default "
                   f"{t.patience}; 0: never)")
    add_loop_options(g)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train_tagger)

    tag = sub.add_parser(
        "tag", help="tag CoNLL-U or plain text with a trained tagger",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write CoNLL-U to stdout. A CoNLL-U FILE comes back with only its UPOS and "
        "XPOS columns replaced (every other column, comment and multiword line untouched), so "
        "the CoNLL 2018 evaluation script can score it against the gold file. Plain text "
        "(--text FILE, or stdin) is one sentence per line, split on whitespace and punctuation.")
    tag.add_argument("file", nargs="?", metavar="FILE.conllu", help="CoNLL-U to re-tag")
    tag.add_argument("--checkpoint", required=True, metavar="RUN", help="run directory")
    tag.add_argument("--text", metavar="FILE", help="plain text, one sentence per line")
    tag.set_defaults(func=_tag)
