"""Trainer: exact resumption, NaN guard, evaluation; the CLI end to end on a tiny corpus."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from rnnlab import optim
from rnnlab.cli.main import main
from rnnlab.data.text import load_corpus
from rnnlab.io.checkpoint import CheckpointError
from rnnlab.models import LanguageModel, LMConfig
from rnnlab.nn.layers import SoftmaxCrossEntropy
from rnnlab.tasks.lm.task import LMTask, TrainConfig, evaluate, load_run, perplexity
from rnnlab.training import Interrupted, Trainer, TrainingDiverged

TEXT = "".join(f"line {i}: the quick brown fox {i % 7} jumps over the lazy dog\n"
               for i in range(60))


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def _trainer(corpus_file: Path, out: Path, **overrides) -> Trainer:
    corpus = load_corpus(str(corpus_file), level="char")
    model = LanguageModel(LMConfig(vocab_size=len(corpus.vocab), embed_size=8, hidden_size=12,
                                   num_layers=2, dropout=0.2), seed=0)
    cfg = TrainConfig(**{"epochs": 2, "batch_size": 4, "bptt": 16, "lr": 1e-2, "log_every": 1,
                         "eval_batch_size": 3, **overrides})
    return Trainer(LMTask(model, corpus, cfg), out, log=lambda _: None, progress=False)


def _losses(out: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if "valid_ppl" not in r]


def _resume(corpus_file: Path, out: Path, **overrides) -> Trainer:
    model, vocab, state, weights, arrays = load_run(out)
    trainer = _trainer(corpus_file, out, **overrides)
    trainer.restore(state, weights, arrays)
    return trainer


@pytest.mark.parametrize("log_every", [1, 7])
def test_resume_after_step_limit_equals_uninterrupted_run(corpus_file, tmp_path, log_every):
    """With log_every 7 the run stops inside a metrics interval: the resumed run's first record
    still averages all 7 steps, as the uninterrupted run's does."""
    full = _trainer(corpus_file, tmp_path / "full", log_every=log_every)
    final_full = full.fit()
    part = _trainer(corpus_file, tmp_path / "part", max_steps=11, log_every=log_every)
    part.fit()  # stops mid-epoch 1
    assert part.step == 11
    resumed = _resume(corpus_file, tmp_path / "part", log_every=log_every)
    final_resumed = resumed.fit()
    assert _losses(tmp_path / "full") == _losses(tmp_path / "part")  # bit-identical
    assert final_full["test_ppl"] == final_resumed["test_ppl"]
    a = full.model.state_dict()
    b = resumed.model.state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_ctrl_c_saves_and_resume_continues_exactly(corpus_file, tmp_path, monkeypatch):
    full = _trainer(corpus_file, tmp_path / "full", optimizer="sgd", lr=0.5, momentum=0.9,
                    lr_schedule="step", lr_decay_start=1)
    full.fit()
    part = _trainer(corpus_file, tmp_path / "part", optimizer="sgd", lr=0.5, momentum=0.9,
                    lr_schedule="step", lr_decay_start=1)
    original = Trainer.train_step
    calls = {"n": 0}

    def interrupting(self, batch):
        calls["n"] += 1
        if calls["n"] == 17:  # a real Ctrl-C arrives before the step's arithmetic
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", interrupting)
    with pytest.raises(Interrupted) as info:
        part.fit()
    assert info.value.signum == signal.SIGINT
    monkeypatch.setattr(Trainer, "train_step", original)
    resumed = _resume(corpus_file, tmp_path / "part", optimizer="sgd", lr=0.5, momentum=0.9,
                      lr_schedule="step", lr_decay_start=1)
    assert resumed.step == 17  # the step under way when the signal came was finished, then saved
    resumed.fit()
    assert _losses(tmp_path / "full") == _losses(tmp_path / "part")


def _records(out: Path) -> list[dict]:
    """Every metrics record, without the one field that depends on the clock."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(ln).items() if k != "tokens_per_s"} for ln in lines]


def _signal_once(monkeypatch, cls, name, when, signum=signal.SIGINT):
    """Patch cls.name to send ``signum`` to this process the first time ``when(self, *args)``
    holds, right after the original method ran."""
    original = getattr(cls, name)
    sent = {"done": False}

    def patched(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if not sent["done"] and when(self, *args, **kwargs):
            sent["done"] = True
            os.kill(os.getpid(), signum)
        return result

    monkeypatch.setattr(cls, name, patched)
    return original


@pytest.mark.parametrize(
    "where",
    ["during validation", "after a metrics record", "during the final test evaluation"],
)
def test_a_signal_anywhere_in_fit_resumes_to_the_same_records(corpus_file, tmp_path,
                                                               monkeypatch, where):
    """Signals are only flagged; the loop stops where its state is whole. Wherever one lands,
    the resumed run writes exactly the uninterrupted run's records (epoch-end ones included)
    and ends with the same weights. log_every 7 leaves an open interval at each stop."""
    full = _trainer(corpus_file, tmp_path / "full", log_every=7)
    final_full = full.fit()
    part = _trainer(corpus_file, tmp_path / "part", log_every=7)
    if where == "during validation":  # an evaluation window of epoch 1
        target = (LanguageModel, "forward_loss",
                  lambda m, *a, **k: k.get("scale", 1) is None and part.epoch == 1)
    elif where == "after a metrics record":  # between writing a record and the next step
        target = (Trainer, "_write", lambda t, r: r["step"] == 14)
    else:  # the test split, after the last epoch
        target = (LanguageModel, "forward_loss",
                  lambda m, *a, **k: k.get("scale", 1) is None and part.epoch > 2)
    original = _signal_once(monkeypatch, *target, signum=signal.SIGTERM)
    with pytest.raises(Interrupted) as info:
        part.fit()
    assert info.value.signum == signal.SIGTERM and not info.value.at_once
    assert part.model.training  # evaluation gave training mode back
    monkeypatch.setattr(target[0], target[1], original)
    resumed = _resume(corpus_file, tmp_path / "part", log_every=7)
    final = resumed.fit()
    assert _records(tmp_path / "full") == _records(tmp_path / "part")
    assert final["test_ppl"] == final_full["test_ppl"]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_second_signal_stops_at_once_and_saves_nothing(corpus_file, tmp_path, monkeypatch):
    part = _trainer(corpus_file, tmp_path / "part")
    calls = {"n": 0}
    original = Trainer.train_step

    def twice(self, batch):
        calls["n"] += 1
        if calls["n"] == 60:  # in epoch 2: two signals before the step's arithmetic
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", twice)
    with pytest.raises(Interrupted) as info:
        part.fit()
    assert info.value.at_once
    state = json.loads((tmp_path / "part" / "checkpoint" / "checkpoint.json").read_text())
    assert (state["epoch"], state["step"]) == (2, 47)  # the end of epoch 1, not step 59


def test_an_interrupt_inside_a_step_saves_nothing(corpus_file, tmp_path, monkeypatch):
    """An interrupt that lands between the weight update and the step counter (a second Ctrl-C,
    or one outside the main thread) must not save half a step: the checkpoint stays as the
    last epoch left it, and resuming from it gives the uninterrupted run's losses."""
    full = _trainer(corpus_file, tmp_path / "full", optimizer="adam")
    full.fit()
    part = _trainer(corpus_file, tmp_path / "part", optimizer="adam")
    original = optim.clipped_step
    calls = {"n": 0}

    def interrupted_update(*args, **kwargs):
        norm = original(*args, **kwargs)  # the weights have moved ...
        calls["n"] += 1
        if calls["n"] == 52:  # ... in epoch 2 (47 steps each), and the step is not counted yet
            raise KeyboardInterrupt
        return norm

    monkeypatch.setattr(optim, "clipped_step", interrupted_update)
    with pytest.raises(KeyboardInterrupt):
        part.fit()
    monkeypatch.setattr(optim, "clipped_step", original)
    state = json.loads((tmp_path / "part" / "checkpoint" / "checkpoint.json").read_text())
    assert (state["epoch"], state["position"]) == (2, 0)  # the end of epoch 1, not step 52
    resumed = _resume(corpus_file, tmp_path / "part", optimizer="adam")
    resumed.fit()
    assert _losses(tmp_path / "full") == _losses(tmp_path / "part")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(corpus_file, tmp_path):
    out = tmp_path / "run"
    trainer = _trainer(corpus_file, out, epochs=1)
    trainer.fit()
    before = {p.name: p.read_bytes() for p in (out / "checkpoint").iterdir()}
    resumed = _resume(corpus_file, out, epochs=2)
    resumed.model.parameters()["rnn.weight_hh_l0"][0, 0] = np.inf  # poison the weights
    with pytest.raises(TrainingDiverged, match="diverged.*last good checkpoint"):
        resumed.fit()
    after = {p.name: p.read_bytes() for p in (out / "checkpoint").iterdir()}
    assert before == after


@pytest.mark.parametrize(
    ("bad", "message"),
    [({"clip": -1.0}, "clip: expected a finite number >= 0"),
     ({"clip": float("nan")}, "clip: expected a finite number"),
     ({"momentum": 1.0}, r"momentum: expected a finite number in \[0, 1\)"),
     ({"lr": float("inf")}, "lr: expected a finite number"),
     ({"lr_decay": 0.0}, "lr_decay: expected a finite number > 0"),
     ({"patience": -1}, "patience: expected an integer >= 0"),
     ({"max_steps": 1.5}, "max_steps: expected an integer >= 0"),
     ({"epochs": True}, "epochs: expected a positive integer")],
    ids=lambda v: str(v) if isinstance(v, dict) else "",
)
def test_train_config_rejects_bad_values_when_built(bad, message):
    """Not after the first step, deep in the optimizer: the library's config says it."""
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)


def test_evaluate_counts_every_target_once(corpus_file):
    corpus = load_corpus(str(corpus_file), level="char")
    model = LanguageModel(LMConfig(vocab_size=len(corpus.vocab), embed_size=6, hidden_size=7,
                                   num_layers=1), seed=1)
    ids = corpus.valid
    n = len(ids) - 1
    ce = SoftmaxCrossEntropy(reduction="sum")
    for batch, bptt in [(1, 5), (3, 4), (7, 100)]:
        # reference: each of the `batch` contiguous pieces run on its own from a zero state
        per = -(-n // batch)
        total = 0.0
        for start in range(0, n, per):
            stop = min(start + per, n)
            logits, _ = model(ids[start:stop, None])
            total += ce(logits, ids[start + 1:stop + 1, None])
        assert evaluate(model, ids, batch, bptt) == pytest.approx(total / n, rel=1e-5)


# ------------------------------------------------------------------------------------------ CLI
SMALL = ["--level", "char", "--hidden", "12", "--embed", "8", "--layers", "1", "--batch-size",
         "4", "--bptt", "16", "--epochs", "1", "--no-progress", "--samples", "1",
         "--sample-length", "20"]


def test_cli_train_generate_eval(corpus_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "lm", "--data", str(corpus_file), "--out", str(out), *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "sample 1" in printed and "test ppl" in printed
    for name in ("checkpoint", "config.json", "vocab.json", "metrics.jsonl"):
        assert (out / name).exists()
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("epoch", "step", "loss", "lr", "grad_norm", "tokens_per_s", "valid_ppl",
                "test_ppl"):
        assert key in last and math.isfinite(last[key])
    assert main(["generate", "--checkpoint", str(out), "--prompt", "line", "--length", "30"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("line") and len(text.rstrip("\n")) == 34
    assert main(["eval", "--checkpoint", str(out), "--data", str(corpus_file)]) == 0
    printed = capsys.readouterr().out
    assert f"{last['test_ppl']:.2f}" in printed  # the same number the run reported


def test_cli_preset_then_flags_override(corpus_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "lm", "--preset", "zaremba-small", "--data", str(corpus_file), "--out",
            str(out), *SMALL, "--max-steps", "2"]
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["optimizer"] == "sgd" and config["train"]["loss"] == "sum_time"
    assert config["model"]["hidden_size"] == 12  # flag beats the preset's 200
    assert config["model"]["init_range"] == 0.1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.txt", "not found"),
        (lambda d: _write(d / "empty.txt", b""), "empty"),
        (lambda d: _write(d / "bad.txt", b"hello\nworld \xff\xfe there\n"), "byte 12"),
        (lambda d: _write(d / "short.txt", b"abcdefghij" * 4), "shorter than one batch window"),
    ],
)
def test_cli_bad_data_is_one_clear_line(tmp_path, capsys, make, message):
    path = make(tmp_path)
    code = main(["train", "lm", "--data", str(path), "--out", str(tmp_path / "run"), *SMALL,
                 "--batch-size", "32"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("rnnlab: error:") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "split"),
    [("a b c d e f g h i j k l m n o p q r s t\n", "1 valid"),  # 21 tokens: 18 / 1 / 2
     ("ab" * 30, "1 test")],
    ids=["word-valid", "char-test"],
)
def test_cli_a_split_without_a_target_is_one_clear_line(tmp_path, capsys, text, split):
    """A valid or test split of one token has no target to score: refused when loading
    (it ended in a ZeroDivisionError traceback at the end of the first epoch)."""
    path = tmp_path / "short.txt"
    path.write_text(text if split == "1 valid" else text[:21], encoding="utf-8")
    level = "word" if split == "1 valid" else "char"
    code = main(["train", "lm", "--data", str(path), "--out", str(tmp_path / "run"),
                 *SMALL, "--level", level, "--batch-size", "2", "--bptt", "3"])
    err = capsys.readouterr().err
    assert code == 2 and "at least 2 tokens in every split" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="at least 2 tokens"):
        evaluate(None, np.array([3]), 2, 4)


@pytest.mark.parametrize(
    "args",
    [["--patience", "-1"], ["--max-steps", "-1"], ["--init-range", "nan"],
     ["--init-range", "inf"], ["--init-range", "-5"], ["--dropout", "1"], ["--lr", "0"],
     ["--clip", "-1"], ["--seed", "-1"], ["--momentum", "1.5"], ["--lr-decay", "inf"]],
    ids=lambda a: " ".join(a),
)
def test_cli_bad_option_values_are_usage_errors(tmp_path, capsys, args):
    with pytest.raises(SystemExit) as exc:
        main(["train", "lm", "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert f"argument {args[0]}" in err and "expected" in err


@pytest.mark.parametrize("temperature", ["nan", "inf", "0", "-1"])
def test_cli_generate_rejects_a_non_finite_or_non_positive_temperature(capsys, temperature):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--checkpoint", "x", "--prompt", "a", "--temperature", temperature])
    assert exc.value.code == 2 and "argument --temperature" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--optimizer", "adam", "--momentum", "0.9"], "--momentum (it applies to --optimizer sgd"),
     (["--lr-decay", "0.5"], "--lr-decay (it needs --lr-schedule"),
     (["--lr-schedule", "plateau", "--lr-decay-start", "3"], "--lr-decay-start (the plateau")],
)
def test_cli_refuses_options_the_configuration_ignores(tmp_path, capsys, args, message):
    assert main(["train", "lm", "--out", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_cli_resume_refuses_options_it_would_ignore(corpus_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "lm", "--data", str(corpus_file), "--out", str(out), *SMALL,
                 "--max-steps", "3"]) == 0
    capsys.readouterr()
    code = main(["train", "lm", "--out", str(out), "--resume", "--hidden", "99", "--lr", "5"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot change --hidden, --lr" in err
    moved = tmp_path / "moved.txt"  # --data may say where the training text is now
    moved.write_bytes(corpus_file.read_bytes())
    corpus_file.unlink()
    assert main(["train", "lm", "--out", str(out), "--resume", "--data", str(moved),
                 "--max-steps", "5", "--no-progress", "--samples", "0"]) == 0
    state = json.loads((out / "checkpoint" / "checkpoint.json").read_text())
    assert state["step"] == 5 and state["data"]["source"] == str(moved)
    lines = moved.read_text().splitlines(keepends=True)  # two words swapped in a training
    lines[40] = lines[40].replace("quick brown", "brown quick")  # line: the same vocabulary
    moved.write_text("".join(lines))
    capsys.readouterr()
    assert main(["train", "lm", "--out", str(out), "--resume", "--max-steps", "7"]) == 2
    assert "not the one this run started with" in capsys.readouterr().err


def test_the_saved_data_path_is_absolute(corpus_file, tmp_path, monkeypatch, capsys):
    """eval and --resume find the data from another working directory."""
    monkeypatch.chdir(corpus_file.parent)
    out = tmp_path / "run"
    assert main(["train", "lm", "--data", corpus_file.name, "--out", str(out), *SMALL,
                 "--max-steps", "2"]) == 0
    state = json.loads((out / "checkpoint" / "checkpoint.json").read_text())
    assert state["data"]["source"] == str(corpus_file.resolve())
    monkeypatch.chdir(tmp_path.parent)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--split", "valid"]) == 0
    assert "perplexity" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_weights_that_overflow_are_never_saved(corpus_file, tmp_path):
    """lr 1e300 turns finite gradients into infinite weights; the step limit then saves: the
    guard must refuse, and must not claim a checkpoint that was never written."""
    out = tmp_path / "run"
    trainer = _trainer(corpus_file, out, optimizer="sgd", lr=1e300, clip=0.0, max_steps=1)
    with pytest.raises(TrainingDiverged, match="non-finite weights.*no checkpoint had been"):
        trainer.fit()
    assert not (out / "checkpoint").exists()
    trainer = _trainer(corpus_file, tmp_path / "run2", optimizer="sgd", lr=1e300, clip=0.0)
    with pytest.raises(TrainingDiverged, match="non-finite weights"):  # not "x: expected ..."
        trainer.fit()


def test_perplexity_of_a_huge_loss_is_inf_not_an_overflow_error():
    assert perplexity(1.0) == math.e
    assert perplexity(1000.0) == math.inf


def test_a_torn_last_metrics_line_is_dropped_on_resume(corpus_file, tmp_path):
    out = tmp_path / "run"
    _trainer(corpus_file, out, max_steps=5).fit()
    metrics = out / "metrics.jsonl"
    whole = metrics.read_text()
    metrics.write_text(whole + '{"epoch": 1, "st')  # a crash while appending
    resumed = _resume(corpus_file, out)
    kept = [ln for ln in whole.splitlines() if '"final"' not in ln]  # resuming drops "final"
    assert metrics.read_text().splitlines() == kept
    resumed.fit()
    metrics.write_text('{"epoch": 1, "st\n' + whole)  # damage elsewhere is an error
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 1: not a JSON record"):
        _resume(corpus_file, out)


def test_a_new_run_replaces_metrics_left_without_a_checkpoint(corpus_file, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"epoch": 1, "step": 50, "loss": 2e7}\n')
    _trainer(corpus_file, out, max_steps=3).fit()
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 3]  # one record a step, then the final one; no step 50


def test_a_checkpoint_lacking_its_state_is_a_clear_error(corpus_file, tmp_path):
    out = tmp_path / "run"
    _trainer(corpus_file, out, max_steps=2).fit()
    path = out / "checkpoint" / "checkpoint.json"
    state = json.loads(path.read_text())
    del state["model_config"]
    path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="lacks model_config"):
        load_run(out)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_cli_refuses_to_overwrite_a_run_and_detects_corruption(corpus_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "lm", "--data", str(corpus_file), "--out", str(out), *SMALL]) == 0
    capsys.readouterr()
    assert main(["train", "lm", "--data", str(corpus_file), "--out", str(out), *SMALL]) == 2
    assert "--resume" in capsys.readouterr().err
    weights = out / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # truncate
    assert main(["generate", "--checkpoint", str(out), "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert "corrupted or truncated" in err and len(err.strip().splitlines()) == 1


def test_cli_eval_text_reads_any_file_with_the_checkpoints_vocabulary(corpus_file, tmp_path,
                                                                    capsys):
    """--text on the characters of the test split gives the test split's perplexity; unknown
    characters are counted as <unk>."""
    out = tmp_path / "run"
    assert main(["train", "lm", "--data", str(corpus_file), "--out", str(out), *SMALL]) == 0
    corpus = load_corpus(str(corpus_file), level="char")
    test_text = tmp_path / "test.txt"
    test_text.write_text("".join(corpus.vocab.decode(corpus.test)), encoding="utf-8")
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--split", "test"]) == 0
    split_ppl = capsys.readouterr().out.split("perplexity ")[1].strip()
    assert main(["eval", "--checkpoint", str(out), "--text", str(test_text)]) == 0
    printed = capsys.readouterr().out
    assert printed.strip().endswith(f"perplexity {split_ppl}") and "(0 of them <unk>" in printed
    other = tmp_path / "zebra.txt"
    other.write_text("Zebras! quick", encoding="utf-8")  # Z, b, !, ... are not in the vocabulary
    assert main(["eval", "--checkpoint", str(out), "--text", str(other)]) == 0
    unk = sum(ch not in corpus.vocab.itos for ch in "ebras! quick")
    assert f"12 tokens ({unk} of them <unk>" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(out), "--text", str(other), "--split", "test"]) == 2
    assert "takes no --data or --split" in capsys.readouterr().err


def test_cli_eval_with_mismatched_vocabulary(corpus_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "lm", "--data", str(corpus_file), "--out", str(out), *SMALL]) == 0
    other = tmp_path / "other.txt"
    other.write_text("completely different text with zebras!? " * 50, encoding="utf-8")
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--data", str(other)]) == 2
    assert "does not match" in capsys.readouterr().err


def test_cli_unknown_option_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "lm", "--out", "x", "--bogus"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_cli_generate_suggest_prints_n_ranked_tokens(corpus_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "lm", "--data", str(corpus_file), "--out", str(out), *SMALL]) == 0
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(out), "--prompt", "the quick", "--suggest",
                 "3"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [r.split()[0] for r in rows] == ["1", "2", "3"]
    probs = [float(r.split()[1].rstrip("%")) for r in rows]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.0


def test_cli_generate_suggest_refuses_sampling_options(capsys):
    code = main(["generate", "--checkpoint", "x", "--prompt", "a", "--suggest", "3",
                 "--temperature", "0.5", "--top-k", "4"])
    assert code == 2
    assert "--temperature, --top-k would have no effect" in capsys.readouterr().err


def test_cli_plain_resume_keeps_the_step_limit_of_an_interrupted_run(corpus_file, tmp_path,
                                                                     monkeypatch, capsys):
    """Stopped by a signal before its --max-steps, a run resumed without options still stops
    at that limit; one that reached its limit goes on without it."""
    out = tmp_path / "run"
    original = _signal_once(monkeypatch, Trainer, "train_step", lambda t, batch: t.step == 9)
    assert main(["train", "lm", "--data", str(corpus_file), "--out", str(out), *SMALL,
                 "--samples", "0", "--max-steps", "30"]) == 130
    monkeypatch.setattr(Trainer, "train_step", original)

    def step():
        return json.loads((out / "checkpoint" / "checkpoint.json").read_text())["step"]

    assert step() == 10
    assert main(["train", "lm", "--out", str(out), "--resume", "--no-progress",
                 "--samples", "0"]) == 0
    assert step() == 30
    assert main(["train", "lm", "--out", str(out), "--resume", "--no-progress",
                 "--samples", "0"]) == 0
    assert step() == 47  # the end of the only epoch


def test_generate_warns_about_unknown_prompt_tokens(corpus_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "lm", "--data", str(corpus_file), "--out", str(out), *SMALL]) == 0
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(out), "--prompt", "Zebra", "--length", "5"]) == 0
    assert "not in the vocabulary" in capsys.readouterr().err


def test_sigterm_saves_a_checkpoint_mid_epoch_and_exits_143(tmp_path):
    """`kill PID` (a scheduler's time limit) is handled like Ctrl-C: the epoch in progress is
    saved, the exit code is 128 + 15, and --resume continues from that step."""
    import os
    import signal
    import subprocess
    import sys
    import time

    corpus = tmp_path / "long.txt"  # one epoch: thousands of windows, far longer than the wait
    corpus.write_text(TEXT * 40, encoding="utf-8")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rnnlab.cli", "train", "lm", "--data", str(corpus),
           "--out", str(out), "--layers", "1", "--hidden", "8", "--embed", "4",
           "--batch-size", "2", "--bptt", "4", "--epochs", "1", "--log-every", "1",
           "--samples", "0", "--no-progress"]
    log = tmp_path / "output.txt"  # a file, not a pipe: a full pipe would stall the child
    with log.open("w", encoding="utf-8") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, "OPENBLAS_NUM_THREADS": "1",
                                     "PYTHONUNBUFFERED": "1"})

    def printed() -> str:
        return f"the subprocess printed:\n{log.read_text(encoding='utf-8')}"

    def stop(why: str) -> None:
        proc.kill()
        proc.wait()
        pytest.fail(f"{why}; {printed()}")

    # Wait until 3 steps are in metrics.jsonl (so the signal handlers are installed and the
    # checkpoint will be mid-epoch), however long a slow runner takes to start and get there.
    metrics = out / "metrics.jsonl"
    limit = 300
    deadline = time.monotonic() + limit
    steps = 0
    while steps < 3:
        if proc.poll() is not None:
            pytest.fail(f"training exited with {proc.returncode} before it logged 3 steps to "
                        f"metrics.jsonl (it logged {steps}); {printed()}")
        if time.monotonic() > deadline:
            stop(f"training had logged {steps} of 3 steps to metrics.jsonl after {limit} s")
        time.sleep(0.05)
        steps = len(metrics.read_text(encoding="utf-8").splitlines()) if metrics.exists() else 0
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        stop(f"training did not exit within {limit} s of SIGTERM")
    output = log.read_text(encoding="utf-8")
    assert proc.returncode == 128 + signal.SIGTERM, printed()
    assert "interrupted: checkpoint saved" in output
    state = json.loads((out / "checkpoint" / "checkpoint.json").read_text(encoding="utf-8"))
    assert state["epoch"] == 1 and state["step"] >= 3 and state["position"] == state["step"]
    assert main(["train", "lm", "--data", str(corpus), "--out", str(out), "--resume",
                 "--max-steps", str(state["step"] + 2), "--samples", "0", "--no-progress"]) == 0
    after = json.loads((out / "checkpoint" / "checkpoint.json").read_text(encoding="utf-8"))
    assert after["step"] == state["step"] + 2
