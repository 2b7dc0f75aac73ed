"""``rnnlab train seq2seq`` and ``rnnlab translate``: parse, call the library, print."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path

from rnnlab.cli.argtypes import (
    UserError,
    add_save_options,
    non_negative_float,
    non_negative_int,
    positive_int,
    refuse_existing_run,
)

TRANSLATE_BATCH = 1000  # inputs decoded together by greedy decoding
# what --resume may change: how long to go on, and how often to record and save
RESUME_OPTIONS = ("epochs", "max_steps", "log_every", "save_every", "save_minutes")


def _train_seq2seq(args: argparse.Namespace) -> int:
    from rnnlab.data.pairs import build_vocabs
    from rnnlab.models.seq2seq import Seq2Seq, Seq2SeqConfig
    from rnnlab.tasks.seq2seq.task import (
        Seq2SeqTask,
        Seq2SeqTrainConfig,
        load_pairs,
        load_seq2seq,
        upgrade_state,
    )
    from rnnlab.training import Trainer

    out = Path(args.out)
    if args.resume:
        model, src_vocab, tgt_vocab, state, arrays = load_seq2seq(out)
        model.train()
        opts = {**state["train_config"]}
        for k in RESUME_OPTIONS:
            if getattr(args, k) is not None:
                opts[k] = getattr(args, k)
        cfg = Seq2SeqTrainConfig(**opts)
        train, test, what = load_pairs(cfg)
        if [v.to_dict() for v in build_vocabs(train)] != [src_vocab.to_dict(),
                                                         tgt_vocab.to_dict()]:
            raise UserError(f"{out}: the data's vocabularies do not match the checkpoint's")
        state = upgrade_state(state, len(train))
        model_cfg = model.config
    else:
        refuse_existing_run(out)
        cfg = Seq2SeqTrainConfig(**{f.name: getattr(args, f.name) for f in fields(
            Seq2SeqTrainConfig) if getattr(args, f.name, None) is not None})
        train, test, what = load_pairs(cfg)
        src_vocab, tgt_vocab = build_vocabs(train)
        model_cfg = Seq2SeqConfig(len(src_vocab), len(tgt_vocab), cell=args.cell,
                                  embed_size=args.embed, hidden_size=args.hidden,
                                  num_layers=args.layers, bidirectional=args.bidirectional,
                                  attention=args.attention, peeky=args.peeky,
                                  reverse_source=args.reverse, dtype=args.dtype)
        model = Seq2Seq(model_cfg, seed=cfg.seed)
    print(f"data {what}: {len(train):,} train / {len(test):,} test pairs; vocabularies "
          f"{len(src_vocab)} / {len(tgt_vocab)}")
    print(f"model {model_cfg}")
    print(f"training {cfg}")
    print(f"{sum(p.size for p in model.parameters().values()):,} parameters; run directory {out}")
    task = Seq2SeqTask(model, train, test, src_vocab, tgt_vocab, cfg)
    trainer = Trainer(task, out, progress=not args.no_progress)
    if args.resume:
        trainer.restore(state, weights=model.state_dict(), arrays=arrays)
        print(f"resuming {out} at epoch {trainer.epoch}, step {trainer.step}")
    start = time.perf_counter()
    final = trainer.fit()  # SIGINT / SIGTERM: the step ends, it saves, main exits 130 / 143
    if not final:
        print(f"{out} has already trained {trainer.epoch - 1} epochs (--epochs N to go on)")
        return 0
    print(f"trained in {time.perf_counter() - start:.0f} s; test exact match "
          f"{final['test_exact_match']:.2%}; metrics in {out / 'metrics.jsonl'}")
    return 0


def _translate(args: argparse.Namespace) -> int:
    from rnnlab.data.pairs import BOS, EOS, decode, encode, special_id
    from rnnlab.plots import pyplot
    from rnnlab.tasks.seq2seq.task import load_seq2seq
    from rnnlab.tasks.seq2seq.translate import beam_search, greedy_decode

    if args.plot_attention:
        pyplot()  # fail before decoding, not after it, when matplotlib is missing
    model, src_vocab, tgt_vocab, _, _ = load_seq2seq(args.checkpoint)
    inputs = args.inputs or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not inputs:
        raise UserError("expected at least one input (as arguments or lines on stdin), got none")
    if args.plot_attention and model.attention is None:
        raise UserError("--plot-attention: this model has no attention (trained with "
                        "--attention none)")
    bos, eos = special_id(tgt_vocab, BOS), special_id(tgt_vocab, EOS)
    reverse = model.config.reverse_source
    for text in inputs:
        _, unknown = src_vocab.encode(text, return_unknown=True)
        if unknown:
            print(f"rnnlab: warning: characters not seen in training, read as <unk>: "
                  f"{''.join(unknown)!r}", file=sys.stderr)

    def decoded():
        """One result per input: greedy decoding runs a batch of inputs at once."""
        if args.beam > 1:
            for text in inputs:
                src, _ = encode([text], src_vocab, reverse=reverse)
                yield beam_search(model, src[:, 0], bos, eos, args.max_length, beam=args.beam)
            return
        for s in range(0, len(inputs), TRANSLATE_BATCH):
            src, lengths = encode(inputs[s:s + TRANSLATE_BATCH], src_vocab, reverse=reverse)
            yield from greedy_decode(model, src, lengths, bos, eos, args.max_length)

    for k, (text, result) in enumerate(zip(inputs, decoded(), strict=True)):
        answer = decode(result.ids, tgt_vocab)
        print(answer)
        if args.plot_attention and k == 0:
            from rnnlab.plots import plot_attention

            source = list(text[::-1] if reverse else text)
            output = [tgt_vocab.itos[i] for i in result.ids]
            output += ["<eos>"] * (len(result.attention) - len(output))
            weights = result.attention[:, :len(source)]  # keys past its end (batch padding): 0
            plot_attention(weights, source, output, args.plot_attention,
                           title=f"{text!r} -> {answer!r}")
            print(f"wrote {args.plot_attention}", file=sys.stderr)
    return 0


def add_seq2seq_parsers(tsub, sub) -> None:
    """``rnnlab train seq2seq`` (under ``train``'s subparsers ``tsub``) and ``rnnlab translate``."""
    s2s = tsub.add_parser(
        "seq2seq", help="an encoder-decoder on character pairs (addition, dates, your TSV)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train an LSTM/GRU encoder-decoder with teacher forcing on character-level\n"
        "(source, target) pairs, decode the test set greedily after every epoch and append\n"
        "epoch, loss, test_exact_match and test_char_acc to DIR/metrics.jsonl.\n\n"
        "--data addition | date   generated pairs ('16+75' -> '91';\n"
        "                         'september 27, 1994' -> '1994-09-27')\n"
        "--data PATH              a file in the book's format (one question_answer per line,\n"
        "                         as in dlfs2-seq2seq/addition.txt) or a TSV of\n"
        "                         source<TAB>target lines\n"
        "Split as in 'Deep Learning from Scratch 2': shuffled with seed 1984, last 10% test.\n"
        "With --attention the decoder's output h_t attends over the encoder's outputs\n"
        "(Luong et al. 2015) and [h_t, context] feeds the readout.\n\n"
        "Examples:\n  rnnlab train seq2seq --data addition --reverse --peeky --out runs/add\n"
        "  rnnlab train seq2seq --out runs/add --resume --epochs 30\n"
        "  rnnlab train seq2seq --data date --attention dot --reverse --epochs 10 --out runs/date\n"
        "  rnnlab translate --checkpoint runs/date --plot-attention att.png '2/10/93'",
    )
    from rnnlab.models.seq2seq import ATTENTION, CELLS, Seq2SeqConfig
    from rnnlab.tasks.seq2seq.task import Seq2SeqTrainConfig

    m = {f.name: f.default for f in fields(Seq2SeqConfig)}  # the defaults are the dataclasses'
    t = Seq2SeqTrainConfig()
    s2s.add_argument("--out", required=True, metavar="DIR", help="run directory")
    s2s.add_argument("--resume", action="store_true", help="continue the run in --out exactly "
                     "where it stopped (its saved settings; only --epochs, --max-steps, "
                     "--log-every, --save-every and --save-minutes apply)")
    s2s.add_argument("--data", help=f"addition | date | PATH (default {t.data})")
    s2s.add_argument("--size", type=positive_int,
                     help=f"pairs generated for addition/date (default {t.size})")
    s2s.add_argument("--dedup", action="store_true", default=None,
                     help="drop repeated pairs before the split")
    s2s.add_argument("--reverse", action="store_true", help="read the source backwards "
                     "(Sutskever et al. 2014)")
    s2s.add_argument("--peeky", action="store_true", help="feed the encoder's summary to every "
                     "decoder step and to the readout")
    s2s.add_argument("--attention", choices=ATTENTION, default=m["attention"],
                     help=f"score function of the attention (default {m['attention']})")
    s2s.add_argument("--cell", choices=sorted(CELLS), default=m["cell"])
    s2s.add_argument("--layers", type=positive_int, default=m["num_layers"])
    s2s.add_argument("--hidden", type=positive_int, default=m["hidden_size"],
                     help=f"default {m['hidden_size']}")
    s2s.add_argument("--embed", type=positive_int, default=m["embed_size"],
                     help=f"default {m['embed_size']}")
    s2s.add_argument("--bidirectional", action="store_true", help="bidirectional encoder")
    s2s.add_argument("--epochs", type=positive_int, help=f"default {t.epochs}; with --resume: "
                     "the total to reach")
    s2s.add_argument("--batch-size", type=positive_int, dest="batch_size",
                     help=f"default {t.batch_size}")
    s2s.add_argument("--lr", type=float, help=f"Adam learning rate (default {t.lr:g})")
    s2s.add_argument("--lr-decay", type=float, dest="lr_decay",
                     help="multiply the learning rate by this every epoch after "
                     f"--lr-decay-start (default {t.lr_decay:g}: constant)")
    s2s.add_argument("--lr-decay-start", type=int, dest="lr_decay_start",
                     help=f"last epoch at the full learning rate (default {t.lr_decay_start})")
    s2s.add_argument("--clip", type=non_negative_float,
                     help=f"global gradient-norm clip (0: off; default {t.clip:g})")
    s2s.add_argument("--seed", type=int, help=f"default {t.seed}")
    s2s.add_argument("--dtype", choices=["float32", "float64"], default=m["dtype"])
    s2s.add_argument("--max-steps", type=non_negative_int, dest="max_steps",
                     help="stop after N steps in all (0: off)")
    s2s.add_argument("--log-every", type=non_negative_int, dest="log_every", metavar="N",
                     help="steps between metrics records (default 0: one per epoch)")
    add_save_options(s2s)
    s2s.add_argument("--no-progress", action="store_true", dest="no_progress")
    s2s.set_defaults(func=_train_seq2seq)

    tr = sub.add_parser("translate", help="decode inputs with a trained seq2seq model",
                        description="Decode each input (arguments, or lines on stdin) with a "
                        "trained encoder-decoder and print one output per line.")
    tr.add_argument("inputs", nargs="*", help="source strings (default: read stdin)")
    tr.add_argument("--checkpoint", required=True, metavar="RUN", help="run directory")
    tr.add_argument("--beam", type=positive_int, default=1, help="beam width (1: greedy)")
    tr.add_argument("--max-length", type=positive_int, default=50, dest="max_length",
                    help="most output tokens (default 50)")
    tr.add_argument("--plot-attention", metavar="FILE.png", dest="plot_attention",
                    help="draw the attention weights of the first input")
    tr.set_defaults(func=_translate)
