"""``rnnlab train seq2seq`` and ``rnnlab translate``: parse, call the library, print."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rnnlab.argtypes import UserError, positive_int

TRANSLATE_BATCH = 1000  # inputs decoded together by greedy decoding


def _train_seq2seq(args: argparse.Namespace) -> int:
    from rnnlab.data.pairs import build_vocabs
    from rnnlab.models.seq2seq import Seq2Seq, Seq2SeqConfig
    from rnnlab.train_seq2seq import Seq2SeqTrainConfig, Seq2SeqTrainer, load_pairs

    out = Path(args.out)
    if (out / "checkpoint").exists():
        raise UserError(f"{out} already holds a run: choose another --out")
    cfg = Seq2SeqTrainConfig(data=args.data, size=args.size, dedup=args.dedup,
                             epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             clip=args.clip, lr_decay=args.lr_decay,
                             lr_decay_start=args.lr_decay_start, seed=args.seed)
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
    trainer = Seq2SeqTrainer(model, train, test, src_vocab, tgt_vocab, cfg, out,
                             progress=not args.no_progress)
    start = time.perf_counter()
    try:
        final = trainer.fit()
    except KeyboardInterrupt:
        print(f"interrupted: {out / 'checkpoint'} holds the last finished epoch", file=sys.stderr)
        return 130
    print(f"trained in {time.perf_counter() - start:.0f} s; test exact match "
          f"{final['test_exact_match']:.2%}; metrics in {out / 'metrics.jsonl'}")
    return 0


def _translate(args: argparse.Namespace) -> int:
    from rnnlab.data.pairs import decode, encode
    from rnnlab.train_seq2seq import load_seq2seq
    from rnnlab.translate import beam_search, greedy_decode

    model, src_vocab, tgt_vocab, _ = load_seq2seq(args.checkpoint)
    inputs = args.inputs or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not inputs:
        raise UserError("expected at least one input (as arguments or lines on stdin), got none")
    if args.plot_attention and model.attention is None:
        raise UserError("--plot-attention: this model has no attention (trained with "
                        "--attention none)")
    bos, eos = tgt_vocab.stoi["<bos>"], tgt_vocab.stoi["<eos>"]
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
        "  rnnlab train seq2seq --data date --attention dot --reverse --epochs 10 --out runs/date\n"
        "  rnnlab translate --checkpoint runs/date --plot-attention att.png '2/10/93'",
    )
    s2s.add_argument("--out", required=True, metavar="DIR", help="run directory")
    s2s.add_argument("--data", default="addition", help="addition | date | PATH (default "
                     "addition)")
    s2s.add_argument("--size", type=positive_int, default=50000,
                     help="pairs generated for addition/date (default 50000)")
    s2s.add_argument("--dedup", action="store_true", help="drop repeated pairs before the split")
    s2s.add_argument("--reverse", action="store_true", help="read the source backwards "
                     "(Sutskever et al. 2014)")
    s2s.add_argument("--peeky", action="store_true", help="feed the encoder's summary to every "
                     "decoder step and to the readout")
    s2s.add_argument("--attention", choices=["none", "dot", "general", "additive"],
                     default="none", help="score function of the attention (default none)")
    s2s.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    s2s.add_argument("--layers", type=positive_int, default=1)
    s2s.add_argument("--hidden", type=positive_int, default=128, help="default 128")
    s2s.add_argument("--embed", type=positive_int, default=16, help="default 16")
    s2s.add_argument("--bidirectional", action="store_true", help="bidirectional encoder")
    s2s.add_argument("--epochs", type=positive_int, default=25, help="default 25")
    s2s.add_argument("--batch-size", type=positive_int, default=128, dest="batch_size")
    s2s.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    s2s.add_argument("--lr-decay", type=float, default=1.0, dest="lr_decay",
                     help="multiply the learning rate by this every epoch after "
                     "--lr-decay-start (default 1: constant)")
    s2s.add_argument("--lr-decay-start", type=int, default=0, dest="lr_decay_start",
                     help="last epoch at the full learning rate (default 0)")
    s2s.add_argument("--clip", type=float, default=5.0, help="global gradient-norm clip "
                     "(0: off; default 5)")
    s2s.add_argument("--seed", type=int, default=0)
    s2s.add_argument("--dtype", choices=["float32", "float64"], default="float32")
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
