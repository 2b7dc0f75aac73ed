"""``rnnlab train lm``, ``rnnlab eval`` and ``rnnlab generate``: parse, call the library, print."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rnnlab.cli.argtypes import (
    UserError,
    add_device_option,
    add_save_options,
    cpu_only,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    refuse_existing_run,
)
from rnnlab.tasks.lm.presets import DEFAULT_LM, PRESETS


# ------------------------------------------------------------------------------- train lm
def _resolve(args: argparse.Namespace) -> dict:
    """Defaults, then the preset, then every flag given explicitly."""
    resolved = dict(DEFAULT_LM)
    if args.preset:
        resolved.update(PRESETS[args.preset])
    resolved.update({k: v for k, v in vars(args).items() if k in DEFAULT_LM and v is not None})
    return resolved


# what --resume may set: how long to go on, and where the (moved) training data is now
RESUME_OPTIONS = ("epochs", "max_steps", "data", "log_every", "save_every", "save_minutes")


def _train_lm(args: argparse.Namespace) -> int:
    from rnnlab.data.text import load_corpus
    from rnnlab.models.language_model import LanguageModel, LMConfig
    from rnnlab.tasks.lm.generate import generate
    from rnnlab.tasks.lm.task import LMTask, TrainConfig, load_run
    from rnnlab.training import Trainer

    out = Path(args.out)
    if args.resume:
        fixed = [k for k in DEFAULT_LM if k not in RESUME_OPTIONS and getattr(args, k) is not None]
        if fixed or args.preset:
            given = ["--preset"] * bool(args.preset) + ["--" + k.replace("_", "-") for k in fixed]
            raise UserError(f"--resume continues the run with the configuration it was started "
                            f"with; it cannot change {', '.join(given)} (only "
                            f"{', '.join('--' + k.replace('_', '-') for k in RESUME_OPTIONS)})")
        model, vocab, state, weights, arrays = load_run(out, device=args.device)
        opts = {**state["train_config"]}
        data = state["data"]
        source = args.data if args.data is not None else _data_path(data["source"])
        corpus = load_corpus(source, level=data["level"])
        if args.max_steps is not None:  # steps in all, counted from the run's start
            opts["max_steps"] = args.max_steps
        elif state.get("stop_reason") == "max_steps":  # it reached its limit: go on without
            opts["max_steps"] = 0
        for k in ("epochs", "log_every", "save_every", "save_minutes"):
            if getattr(args, k) is not None:
                opts[k] = getattr(args, k)
        cfg = TrainConfig(**opts)
        trainer = Trainer(LMTask(model, corpus, cfg), out, progress=not args.no_progress)
        trainer.restore(state, weights, arrays)  # checks the data is the run's
        print(f"resuming {out} at epoch {trainer.epoch}, step {trainer.step}")
    else:
        r = _resolve(args)
        _refuse_unused_options(args, r)
        corpus = load_corpus(r["data"], level=r["level"])
        model_cfg = LMConfig(vocab_size=len(corpus.vocab), cell=r["cell"], embed_size=r["embed"],
                             hidden_size=r["hidden"], num_layers=r["layers"],
                             dropout=r["dropout"], tie_weights=r["tie"],
                             init_range=r["init_range"], dtype=r["dtype"])
        cfg = TrainConfig(epochs=r["epochs"], batch_size=r["batch_size"], bptt=r["bptt"],
                          optimizer=r["optimizer"], lr=r["lr"], momentum=r["momentum"],
                          weight_decay=r["weight_decay"], clip=r["clip"], loss=r["loss"],
                          lr_schedule=r["lr_schedule"], lr_decay_start=r["lr_decay_start"],
                          lr_decay=r["lr_decay"], patience=r["patience"],
                          eval_batch_size=r["eval_batch_size"], seed=r["seed"],
                          log_every=r["log_every"], max_steps=r["max_steps"],
                          save_every=r["save_every"], save_minutes=r["save_minutes"],
                          warmup_steps=r["warmup_steps"])
        refuse_existing_run(out)
        model = LanguageModel(model_cfg, seed=cfg.seed, device=args.device)
        trainer = Trainer(LMTask(model, corpus, cfg), out, progress=not args.no_progress)
        print(f"corpus {corpus.name} ({corpus.level} level): {len(corpus.train):,} train / "
              f"{len(corpus.valid):,} valid / {len(corpus.test):,} test tokens, "
              f"vocabulary {len(corpus.vocab):,}")
        print(f"model {model_cfg}")
        print(f"training {cfg}")
        print(f"{sum(p.size for p in model.parameters().values()):,} parameters on "
              f"{args.device}; run directory {out}")
    start = time.perf_counter()
    final = trainer.fit()  # SIGINT / SIGTERM: the step ends, it saves, main exits 130 / 143
    print(f"trained in {time.perf_counter() - start:.0f} s; metrics in {out / 'metrics.jsonl'}")
    if args.samples and "test_ppl" in final:
        vocab = corpus.vocab
        for k in range(args.samples):
            prompt = "\n" if corpus.level == "char" else "<eos>"
            ids = vocab.encode(list(prompt) if corpus.level == "char" else [prompt])
            new = generate(trainer.model, ids, args.sample_length, temperature=0.8, seed=k,
                           banned=_banned(vocab, corpus.level))
            print(f"--- sample {k + 1} (temperature 0.8) ---")
            print(_detokenize(vocab.decode(new), corpus.level))
    return 0


def _refuse_unused_options(args: argparse.Namespace, r: dict) -> None:
    """An option given on the command line that the chosen configuration would ignore is a
    mistake worth one line, not a silent no-op."""
    unused = []
    if args.momentum is not None and r["optimizer"] != "sgd":
        unused.append(f"--momentum (it applies to --optimizer sgd, not {r['optimizer']})")
    for k in ("lr_decay", "lr_decay_start"):
        if getattr(args, k) is not None and r["lr_schedule"] == "none":
            unused.append(f"--{k.replace('_', '-')} (it needs --lr-schedule step or plateau)")
    if args.lr_decay_start is not None and r["lr_schedule"] == "plateau":
        unused.append("--lr-decay-start (the plateau schedule decays when validation stalls)")
    if unused:
        raise UserError(f"{'; '.join(unused)}: remove it or change the setting it depends on")


def _banned(vocab, level: str) -> list[int]:
    """Character models never write <unk>: it stands for no character."""
    return [vocab.unk_id] if level == "char" else []


def _data_path(source: str):
    return None if source.startswith("bundled:") else source


def _detokenize(tokens: list[str], level: str) -> str:
    if level == "char":
        return "".join(tokens)
    return " ".join(tokens).replace(" <eos> ", "\n").replace("<eos>", "\n")


# ------------------------------------------------------------------------------- eval, generate
def _eval(args: argparse.Namespace) -> int:
    from rnnlab.data.text import load_corpus
    from rnnlab.tasks.lm.task import evaluate, load_run, perplexity

    if args.what == "tagger":
        from rnnlab.cli.tagging import _eval_tagger

        return cpu_only(_eval_tagger, "rnnlab eval tagger")(args)
    if args.what == "forecast":
        from rnnlab.cli.forecast import _eval_forecast

        return cpu_only(_eval_forecast, "rnnlab eval forecast")(args)
    forecast_only = [o for o in ("holdout", "horizon", "csv", "fill", "series", "track")
                     if getattr(args, o) is not None]
    if forecast_only:
        raise UserError(f"--{forecast_only[0]} is an option of 'rnnlab eval forecast'")
    if args.plot is not None:
        raise UserError("--plot draws a tagger's confusion matrix or a forecaster's forecasts: "
                        "use 'rnnlab eval tagger' or 'rnnlab eval forecast'")
    if args.text is not None and (args.data is not None or args.split is not None):
        raise UserError("--text evaluates one file with the checkpoint's vocabulary: it takes "
                        "no --data or --split")
    model, vocab, state, _, _ = load_run(Path(args.checkpoint), device=args.device)
    level = state["data"]["level"]
    bptt = state["train_config"]["bptt"]
    batch = args.batch_size or state["train_config"]["eval_batch_size"]
    if args.text is not None:
        return _eval_text(args.text, model, vocab, level, batch, bptt)
    args.split = args.split or "test"
    source = args.data if args.data is not None else _data_path(state["data"]["source"])
    corpus = load_corpus(source, level=level)
    if corpus.vocab.fingerprint() != vocab.fingerprint():
        raise UserError(
            f"the vocabulary built from {args.data or 'the training data'} ({len(corpus.vocab)} "
            f"entries) does not match the checkpoint's ({len(vocab)} entries)"
        )
    ids = getattr(corpus, args.split)
    loss = evaluate(model, ids, batch, bptt)
    print(f"{args.split}: {len(ids) - 1:,} tokens, loss {loss:.4f} nats/token, "
          f"perplexity {perplexity(loss):.2f}")
    return 0


def _eval_text(path: str, model, vocab, level: str, batch: int, bptt: int) -> int:
    """Perplexity of any UTF-8 text under the model, its tokens read with the checkpoint's
    vocabulary (unknown ones as <unk>, which the model has seen: say how many there were)."""
    from rnnlab.data.text import read_text, tokenize_chars, tokenize_words
    from rnnlab.tasks.lm.task import evaluate, perplexity

    tokens = (tokenize_words if level == "word" else tokenize_chars)(read_text(path))
    if len(tokens) < 2:
        raise UserError(f"{path}: expected at least 2 tokens (an input and its target), "
                        f"got {len(tokens)}")
    ids = vocab.encode(tokens)
    unk = int((ids[1:] == vocab.unk_id).sum())
    loss = evaluate(model, ids, batch, bptt)
    print(f"{path}: {len(ids) - 1:,} tokens ({unk:,} of them <unk>, {unk / (len(ids) - 1):.1%}), "
          f"loss {loss:.4f} nats/token, perplexity {perplexity(loss):.2f}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from rnnlab.tasks.lm.generate import generate, suggest
    from rnnlab.tasks.lm.task import load_run

    sampling = {"--length": args.length, "--temperature": args.temperature,
                "--top-k": args.top_k, "--top-p": args.top_p, "--seed": args.seed,
                "--greedy": args.greedy or None}
    given = [name for name, value in sampling.items() if value is not None]
    if args.suggest and given:
        raise UserError(f"--suggest lists the next tokens' probabilities and generates "
                        f"nothing: {', '.join(given)} would have no effect")
    model, vocab, state, _, _ = load_run(Path(args.checkpoint), device=args.device)
    level = state["data"]["level"]
    tokens = list(args.prompt) if level == "char" else args.prompt.split()
    if not tokens:
        raise UserError("--prompt: expected at least one token, got an empty prompt")
    ids, unknown = vocab.encode(tokens, return_unknown=True)
    if unknown:
        shown = ", ".join(repr(u) for u in sorted(set(unknown))[:10])
        print(f"rnnlab: warning: {len(unknown)} prompt token(s) not in the vocabulary, "
              f"read as <unk>: {shown}", file=sys.stderr)
    if args.suggest:
        for rank, (i, p) in enumerate(suggest(model, ids, args.suggest, _banned(vocab, level)), 1):
            token = vocab.itos[i]
            print(f"{rank:>3}  {p:8.2%}  {token!r}" if level == "char" else
                  f"{rank:>3}  {p:8.2%}  {token}")
        return 0
    new = generate(model, ids, _default(args.length, 200),
                   temperature=_default(args.temperature, 0.8), top_k=_default(args.top_k, 0),
                   top_p=_default(args.top_p, 1.0), greedy=args.greedy,
                   seed=_default(args.seed, 0), banned=_banned(vocab, level))
    sep = "" if level == "char" else " "
    print(args.prompt + sep + _detokenize(vocab.decode(new), level))
    return 0


def _default(value, default):
    return default if value is None else value


def _add_lm_options(p: argparse.ArgumentParser) -> None:
    d = DEFAULT_LM
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="PATH", help="a PTB-style directory (ptb.train.txt, ...), "
                   "a WikiText-2 directory (wiki.*.tokens) or any UTF-8 text file (split 90/5/5); "
                   "default: Tiny Shakespeare, bundled")
    g.add_argument("--level", choices=["word", "char"], help=f"tokens (default {d['level']})")
    g = p.add_argument_group("model")
    g.add_argument("--cell", choices=["lstm", "gru", "rnn"], help=f"default {d['cell']}")
    g.add_argument("--layers", type=positive_int, help=f"default {d['layers']}")
    g.add_argument("--hidden", type=positive_int, help=f"hidden units (default {d['hidden']})")
    g.add_argument("--embed", type=positive_int, help=f"embedding size (default {d['embed']})")
    g.add_argument("--dropout", type=probability, help="dropout on non-recurrent connections "
                   f"(default {d['dropout']})")
    g.add_argument("--tie", action=argparse.BooleanOptionalAction,
                   help="tie the output layer to the embedding (needs --embed == --hidden)")
    g.add_argument("--init-range", type=positive_float, dest="init_range",
                   help="initialise every weight from U(-r, r) (default: PyTorch's init)")
    g.add_argument("--dtype", choices=["float32", "float64"], help="default float32")
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=["sgd", "adam", "adamw"],
                   help=f"default {d['optimizer']}")
    g.add_argument("--lr", type=positive_float, help=f"learning rate (default {d['lr']})")
    g.add_argument("--momentum", type=probability, help="SGD momentum (default 0)")
    g.add_argument("--weight-decay", type=non_negative_float, dest="weight_decay",
                   help="default 0")
    g.add_argument("--clip", type=non_negative_float,
                   help=f"clip the global gradient L2 norm to this (0: off; default {d['clip']})")
    g.add_argument("--loss", choices=["mean", "sum_time"], help="mean NLL over tokens, or summed "
                   "over the unrolled steps and averaged over the batch (Zaremba et al.)")
    g.add_argument("--lr-schedule", choices=["none", "step", "plateau"], dest="lr_schedule",
                   help="step: multiply by --lr-decay each epoch after --lr-decay-start; "
                   "plateau: multiply by --lr-decay when validation does not improve")
    g.add_argument("--lr-decay-start", type=non_negative_int, dest="lr_decay_start",
                   help=f"step: epochs at the initial lr (default {d['lr_decay_start']})")
    g.add_argument("--lr-decay", type=positive_float, dest="lr_decay",
                   help=f"the lr's factor at each decay (default {d['lr_decay']})")
    g.add_argument("--warmup-steps", type=non_negative_int, dest="warmup_steps", metavar="N",
                   help="raise the lr linearly over the first N steps (default 0: off); with "
                   "mpiexec -n K and the lr scaled by K, a few hundred steps keep the start "
                   "stable")
    g.add_argument("--patience", type=non_negative_int,
                   help="early stop after N epochs without improvement (0: off)")
    g.add_argument("--batch-size", type=positive_int, dest="batch_size",
                   help=f"parallel streams per process (default {d['batch_size']}; under "
                   "mpiexec -n K each rank takes its own, K times as many in all)")
    g.add_argument("--bptt", type=positive_int, help="steps per truncated-BPTT window "
                   f"(default {d['bptt']})")
    g.add_argument("--epochs", type=positive_int, help=f"default {d['epochs']}")
    g.add_argument("--eval-batch-size", type=positive_int, dest="eval_batch_size")
    g.add_argument("--max-steps", type=non_negative_int, dest="max_steps",
                   help="stop after N steps in all (0: off)")
    g.add_argument("--seed", type=non_negative_int,
                   help="seed of initialisation and dropout (default 0)")
    g.add_argument("--log-every", type=positive_int, dest="log_every",
                   help="steps between metrics.jsonl records (default 50)")
    add_save_options(g)


def add_lm_parsers(tsub, sub) -> None:
    """``rnnlab train lm`` (under ``train``'s subparsers ``tsub``), ``eval`` and ``generate``."""
    lm = tsub.add_parser(
        "lm", help="a recurrent language model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a word- or character-level recurrent language model with truncated "
        "BPTT, report validation and test perplexity, save a checkpoint and print samples.\n\n"
        "Presets reproduce published setups; flags given explicitly override them:\n"
        + "\n".join(f"  {name}" for name in PRESETS)
        + "\n\nExamples:\n  rnnlab train lm --out runs/shakespeare\n"
        "  rnnlab train lm --preset zaremba-small --data ../shared/data/ptb --out runs/ptb\n"
        "  rnnlab train lm --out runs/shakespeare --resume --epochs 4\n\n"
        "Ctrl-C or SIGTERM (kill PID) lets the step in progress finish, saves a checkpoint "
        "and exits; --resume continues from it (and takes only --epochs, --max-steps, "
        "--log-every, --save-every, --save-minutes and --data). A checkpoint is also written "
        "after each epoch and every 10 minutes of training (--save-minutes, --save-every), so "
        "even a run killed without warning (kill -9, out of memory) loses at most that much.",
    )
    lm.add_argument("--out", required=True, metavar="DIR",
                    help="run directory: checkpoint/, config.json, vocab.json, metrics.jsonl")
    lm.add_argument("--preset", choices=sorted(PRESETS), help="start from a named configuration")
    lm.add_argument("--resume", action="store_true",
                    help="continue the run in --out exactly where it stopped")
    lm.add_argument("--samples", type=int, default=2, help="samples printed after training")
    lm.add_argument("--sample-length", type=int, default=400, dest="sample_length")
    lm.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_lm_options(lm)
    add_device_option(lm)
    lm.set_defaults(func=_train_lm)

    ev = sub.add_parser("eval", help="perplexity of a language model, or a tagger's accuracy",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Evaluate a checkpoint.\n  rnnlab eval --checkpoint RUN "
                        "[--data PATH --split S | --text FILE]   a language model: exp(mean NLL "
                        "per token) over every token\n  rnnlab eval tagger --checkpoint RUN "
                        "--data FILE.conllu [--plot cm.png]   a tagger: accuracy per tag set "
                        "(seen and unseen words), per-tag precision/recall/F1, confusion matrix"
                        "\n  rnnlab eval forecast --checkpoint RUN --data FILE.csv --holdout N "
                        "[--horizon h] [--csv OUT.csv] [--plot OUT.png]   a forecaster: rolling "
                        "h-step-ahead forecasts of the last N rows, scored beside the baselines")
    ev.add_argument("what", nargs="?", choices=["lm", "tagger", "forecast"], default="lm",
                    help="what the checkpoint holds (default lm)")
    ev.add_argument("--checkpoint", required=True, metavar="RUN", help="run directory")
    ev.add_argument("--plot", metavar="FILE.png", help="tagger: the UPOS confusion matrix; "
                    "forecast: the rolling forecasts beside the actual values")
    ev.add_argument("--data", metavar="PATH", help="the data (default: what it was trained on)")
    ev.add_argument("--split", choices=["train", "valid", "test"], help="default test")
    ev.add_argument("--text", metavar="FILE", help="instead of a split: any UTF-8 text file, "
                    "read with the checkpoint's vocabulary (unknown tokens as <unk>)")
    ev.add_argument("--batch-size", type=positive_int, dest="batch_size",
                    help="parallel streams (default: the run's eval batch size, so the number "
                    "matches the one the run reported)")
    from rnnlab.cli.forecast import add_eval_forecast_options

    add_eval_forecast_options(ev)
    add_device_option(ev)
    ev.set_defaults(func=_eval)

    gen = sub.add_parser("generate", help="continue a prompt with a trained language model",
                         description="Generate text: greedy, or sampling with temperature, "
                         "top-k and top-p (nucleus) filtering.")
    gen.add_argument("--checkpoint", required=True, metavar="RUN", help="run directory")
    gen.add_argument("--prompt", required=True, help="text to continue (words or characters)")
    gen.add_argument("--length", type=positive_int, help="tokens to generate (default 200)")
    gen.add_argument("--temperature", type=positive_float,
                     help="below 1: safer, above 1: wilder (default 0.8)")
    gen.add_argument("--top-k", type=non_negative_int, dest="top_k",
                     help="keep the k most likely (0: all)")
    gen.add_argument("--top-p", type=float, dest="top_p",
                     help="keep the smallest set of tokens with this much probability, in (0, 1] "
                     "(default 1: all)")
    gen.add_argument("--greedy", action="store_true", help="always take the most likely token")
    gen.add_argument("--seed", type=non_negative_int, help="sampling seed (default 0)")
    gen.add_argument("--suggest", type=positive_int, metavar="N",
                     help="autocomplete: print the N most likely next tokens after the prompt, "
                     "with their probabilities, instead of generating text")
    add_device_option(gen)
    gen.set_defaults(func=_generate)
