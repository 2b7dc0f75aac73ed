"""Seq2seq training and the CLI: metrics, checkpoints, translate (greedy, beam, attention plot)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rnnlab.cli.main import main
from rnnlab.data.pairs import build_vocabs
from rnnlab.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnlab.tasks.seq2seq.task import (
    Seq2SeqTask,
    Seq2SeqTrainConfig,
    load_pairs,
    load_seq2seq,
    score,
)
from rnnlab.training import Trainer

SMALL = ["--hidden", "24", "--embed", "8", "--batch-size", "16", "--no-progress"]


@pytest.fixture
def reverse_tsv(tmp_path):
    """A task a small model learns in a few epochs: write the source backwards."""
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(400):
        n = rng.integers(1, 5)
        s = "".join(rng.choice(list("abcd"), size=n))
        lines.append(f"{s}\t{s[::-1]}")
    path = tmp_path / "reverse.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_trainer_learns_and_scores(reverse_tsv, tmp_path):
    cfg = Seq2SeqTrainConfig(data=str(reverse_tsv), epochs=12, batch_size=16, lr=1e-2)
    train, test, _ = load_pairs(cfg)
    assert len(train) == 360 and len(test) == 40
    src_vocab, tgt_vocab = build_vocabs(train)
    model = Seq2Seq(Seq2SeqConfig(len(src_vocab), len(tgt_vocab), embed_size=8, hidden_size=32,
                                  attention="dot"), seed=0)
    before = score(model, test, src_vocab, tgt_vocab)
    trainer = Trainer(Seq2SeqTask(model, train, test, src_vocab, tgt_vocab, cfg),
                      tmp_path / "run", log=lambda s: None, progress=False)
    final = trainer.fit()
    assert before["exact_match"] < 0.2
    assert final["test_exact_match"] >= 0.9, final
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["epoch"] for r in records] == list(range(1, 13))
    assert records[-1]["loss"] < records[0]["loss"]
    for r in records:
        assert {"epoch", "loss", "test_exact_match", "test_char_acc"} <= set(r)
        assert 0.0 <= r["test_exact_match"] <= r["test_char_acc"] + 1e-12 <= 1.0 + 1e-12
    # the checkpoint reproduces the trained model's decoding exactly
    loaded, sv, tv, state, _ = load_seq2seq(tmp_path / "run")
    assert (state["epoch"], state["position"]) == (13, 0)  # 12 done, the 13th not begun
    assert score(loaded, test, sv, tv) == score(model, test, src_vocab, tgt_vocab)


def test_score_counts_exact_and_characters():
    """A model that cannot emit anything useful scores 0; the char accuracy is per position."""
    pairs = [("ab", "ba"), ("c", "c")]
    src_vocab, tgt_vocab = build_vocabs(pairs)
    model = Seq2Seq(Seq2SeqConfig(len(src_vocab), len(tgt_vocab), hidden_size=4), seed=0)
    readout = model.readout.parameters()
    readout["weight"][...] = 0.0
    readout["bias"][...] = -10.0
    readout["bias"][tgt_vocab.stoi["a"]] = 0.0  # always 'a', never <eos>: 'aaa...'
    s = score(model, pairs, src_vocab, tgt_vocab, max_length=3)
    assert s == {"exact_match": 0.0, "char_acc": pytest.approx(1 / 3)}  # 'ba' vs 'aa': 1 of 3


def test_cli_train_translate_beam_and_plot(reverse_tsv, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "seq2seq", "--data", str(reverse_tsv), "--attention", "general",
                 "--epochs", "2", "--out", str(out), *SMALL])
    assert code == 0
    text = capsys.readouterr().out
    assert "test exact match" in text
    assert (out / "checkpoint" / "model.safetensors").is_file()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    png = tmp_path / "att.png"
    # the plotted first input is the shorter one: decoded in a batch padded to "abca"
    assert main(["translate", "--checkpoint", str(out), "dd", "abca",
                 "--plot-attention", str(png)]) == 0
    greedy = capsys.readouterr().out.splitlines()
    assert len(greedy) == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    alone = []
    for text in ("dd", "abca"):  # one at a time == in one padded batch
        assert main(["translate", "--checkpoint", str(out), "--beam", "1", text]) == 0
        alone += capsys.readouterr().out.splitlines()
    assert alone == greedy
    assert main(["translate", "--checkpoint", str(out), "--beam", "3", "abc"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_cli_translate_reads_stdin(reverse_tsv, tmp_path, capsys, monkeypatch):
    import io

    out = tmp_path / "run"
    assert main(["train", "seq2seq", "--data", str(reverse_tsv), "--epochs", "1", "--out",
                 str(out), *SMALL]) == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("ab\n\ncd\n"))
    assert main(["translate", "--checkpoint", str(out)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_cli_generated_data(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "seq2seq", "--data", "addition", "--size", "300", "--epochs", "1",
                 "--reverse", "--peeky", "--out", str(out), *SMALL]) == 0
    assert "addition (generated, 300 pairs): 270 train / 30 test" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--data", "MISSING.tsv"], "MISSING.tsv"),
    (["--data", "addition", "--size", "5"], "expected enough pairs"),
])
def test_cli_train_errors(tmp_path, capsys, argv, message):
    code = main(["train", "seq2seq", *argv, "--out", str(tmp_path / "r"), *SMALL])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnlab: error:") and message in err and "Traceback" not in err


def test_cli_refuses_existing_run_and_plot_without_attention(reverse_tsv, tmp_path, capsys,
                                                             monkeypatch):
    out = tmp_path / "run"
    args = ["train", "seq2seq", "--data", str(reverse_tsv), "--epochs", "1", "--out", str(out),
            *SMALL]
    assert main(args) == 0
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    code = main(["translate", "--checkpoint", str(out), "ab", "--plot-attention",
                 str(tmp_path / "x.png")])
    assert code == 2
    assert "has no attention" in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    code = main(["translate", "--checkpoint", str(tmp_path / "missing"), "ab",
                 "--plot-attention", str(tmp_path / "x.png")])  # fails before loading anything
    assert code == 2
    assert "pip install rnnlab[plots]" in capsys.readouterr().err
    lm = tmp_path / "notseq"
    (lm / "checkpoint").mkdir(parents=True)
    assert main(["translate", "--checkpoint", str(lm), "ab"]) == 2


def _metrics(out):
    keep = ("epoch", "loss", "lr", "test_exact_match", "test_char_acc")  # not the timings
    return [{k: json.loads(line)[k] for k in keep} for line in (out / "metrics.jsonl").open()]


def test_cli_resume_equals_an_unbroken_run(reverse_tsv, tmp_path, capsys):
    """2 epochs, then --resume to 3 (with a lr decay across the break): the same weights and
    metrics as 3 epochs in one go; a stray record of an epoch after the checkpoint is dropped,
    and so is a torn last line."""
    common = ["--data", str(reverse_tsv), "--lr", "0.01", "--lr-decay", "0.5",
              "--lr-decay-start", "1", *SMALL]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(["train", "seq2seq", "--epochs", "3", "--out", str(whole), *common]) == 0
    assert main(["train", "seq2seq", "--epochs", "2", "--out", str(parts), *common]) == 0
    with open(parts / "metrics.jsonl", "a", encoding="utf-8") as f:  # a crash after a record
        f.write(json.dumps({"epoch": 3, "loss": 9.0}) + "\n")
        f.write('{"epoch": 3, "lo')  # and one torn while it was appended
    assert main(["train", "seq2seq", "--resume", "--epochs", "3", "--out", str(parts),
                 "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert _metrics(parts) == _metrics(whole)
    a, b = load_seq2seq(whole)[0].state_dict(), load_seq2seq(parts)[0].state_dict()
    for k in a:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)
    assert main(["train", "seq2seq", "--resume", "--out", str(parts), "--no-progress"]) == 0
    assert "already trained 3 epochs" in capsys.readouterr().out
    assert main(["train", "seq2seq", "--resume", "--out", str(tmp_path / "none")]) == 2
    assert "checkpoint" in capsys.readouterr().err


def test_cli_max_steps_inside_an_epoch_scores_the_last_weights(reverse_tsv, tmp_path, capsys):
    """A run that --max-steps ends inside an epoch had no epoch record to report (KeyError):
    a closing record scores the weights it stopped with."""
    out = tmp_path / "run"
    assert main(["train", "seq2seq", "--data", str(reverse_tsv), "--epochs", "2",
                 "--max-steps", "3", "--out", str(out), *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "final (step 3): test exact match" in printed and "trained in" in printed, printed
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert len(records) == 1 and records[0]["final"] is True and records[0]["step"] == 3
    model, sv, tv, state, _ = load_seq2seq(out)
    test = load_pairs(Seq2SeqTrainConfig(data=str(reverse_tsv)))[1]
    assert state["step"] == 3
    assert records[0]["test_exact_match"] == score(model, test, sv, tv)["exact_match"]


def test_config_rejects_bad_lr_decay():
    with pytest.raises(ValueError, match=r"lr_decay: expected a factor in \(0, 1\], got 2"):
        Seq2SeqTrainConfig(lr_decay=2)
    with pytest.raises(ValueError, match="lr_decay_start: expected an epoch >= 0, got -1"):
        Seq2SeqTrainConfig(lr_decay_start=-1)


def test_cli_lr_decay_is_recorded(reverse_tsv, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "seq2seq", "--data", str(reverse_tsv), "--epochs", "3", "--lr", "0.01",
                 "--lr-decay", "0.5", "--lr-decay-start", "1", "--out", str(out), *SMALL]) == 0
    lrs = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").open()]
    assert lrs == pytest.approx([0.01, 0.005, 0.0025])


def test_divergence_is_a_clear_error(reverse_tsv, tmp_path, capsys, monkeypatch):
    from rnnlab.models.seq2seq import Seq2Seq as S

    monkeypatch.setattr(S, "forward_loss", lambda self, *a, **k: (float("nan"), 1))
    out = tmp_path / "run"
    code = main(["train", "seq2seq", "--data", str(reverse_tsv), "--epochs", "1", "--out",
                 str(out), *SMALL])
    assert code == 3
    err = capsys.readouterr().err
    assert "training diverged at epoch 1" in err and "Traceback" not in err
    assert not (out / "checkpoint").exists()  # no epoch finished: nothing saved


def test_cli_translate_warns_about_unseen_characters(reverse_tsv, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "seq2seq", "--data", str(reverse_tsv), "--epochs", "1", "--out",
                 str(out), *SMALL]) == 0
    capsys.readouterr()
    assert main(["translate", "--checkpoint", str(out), "abzqz"]) == 0
    captured = capsys.readouterr()
    assert "read as <unk>: 'zq'" in captured.err
    assert len(captured.out.splitlines()) == 1


def test_encode_batch_shifts_targets_by_one():
    from rnnlab.tasks.seq2seq.task import encode_batch

    pairs = [("ab", "x"), ("c", "yzw")]
    src_vocab, tgt_vocab = build_vocabs(pairs)
    src, src_len, tgt_in, tgt_out, tgt_len = encode_batch(pairs, src_vocab, tgt_vocab, True)
    bos, eos = tgt_vocab.stoi["<bos>"], tgt_vocab.stoi["<eos>"]
    assert list(src_len) == [2, 1] and list(tgt_len) == [2, 4]
    assert list(src[:2, 0]) == list(src_vocab.encode("ba"))  # reversed source
    for b, (_, t) in enumerate(pairs):
        ids = list(tgt_vocab.encode(t))
        n = tgt_len[b]
        assert list(tgt_in[:n, b]) == [bos, *ids]
        assert list(tgt_out[:n, b]) == [*ids, eos]
    assert tgt_in.shape == tgt_out.shape == (4, 2)
