"""The tagging application end to end on a small generated treebank: train (softmax and CRF),
tag CoNLL-U (only UPOS and XPOS change, ranges and empty nodes kept) and plain text, evaluate,
resume, and every bad input as one clear line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from treebank_helpers import write_treebank

from rnnlab.cli.main import main
from rnnlab.data.batching import length_batches
from rnnlab.data.conllu import read_conllu
from rnnlab.tasks.tagging import Vocabs


@pytest.fixture
def treebank(tmp_path):
    root = tmp_path / "ud"
    root.mkdir()
    write_treebank(root / "toy-ud-train.conllu", 300, 0)
    write_treebank(root / "toy-ud-dev.conllu", 40, 1, extras=True)
    write_treebank(root / "toy-ud-test.conllu", 40, 2, extras=True)
    return root


SMALL = ["--word-dim", "8", "--char-dim", "6", "--char-hidden", "6", "--hidden", "12",
         "--layers", "1", "--batch-size", "16", "--lr", "0.01", "--no-progress"]


def _records(out):
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("output", ["softmax", "crf"])
def test_train_tag_and_evaluate(treebank, tmp_path, capsys, output):
    out = tmp_path / f"run-{output}"
    assert main(["train", "tagger", "--data", str(treebank), "--out", str(out), "--epochs", "4",
                 "--output", output, *SMALL]) == 0
    text = capsys.readouterr().out
    assert "train: " in text and "300 sentences" in text and "final (best dev model)" in text
    final = _records(out)[-1]
    assert final["final"] and final["test_upos_acc"] > 0.95 and final["test_xpos_acc"] > 0.95
    # tag the dev file: only UPOS and XPOS may change; the range and the empty node stay
    dev = treebank / "toy-ud-dev.conllu"
    assert main(["tag", "--checkpoint", str(out), str(dev)]) == 0
    tagged = capsys.readouterr().out
    gold = dev.read_text(encoding="utf-8")
    assert len(tagged.splitlines()) == len(gold.splitlines())
    for a, b in zip(tagged.splitlines(), gold.splitlines(), strict=True):
        ca, cb = a.split("\t"), b.split("\t")
        if len(cb) == 10 and cb[0].isdigit():
            assert ca[:3] + ca[5:] == cb[:3] + cb[5:]
        else:
            assert a == b  # comments, blank lines, 1-2 and 3.1 untouched
    assert main(["eval", "tagger", "--checkpoint", str(out), "--data", str(dev)]) == 0
    report = capsys.readouterr().out
    assert "UPOS accuracy" in report and "XPOS accuracy" in report and "NOUN" in report


def test_plain_text_is_tokenized_and_written_as_conllu(treebank, tmp_path, capsys, monkeypatch):
    import io

    out = tmp_path / "run"
    assert main(["train", "tagger", "--data", str(treebank), "--out", str(out), "--epochs", "3",
                 *SMALL]) == 0
    capsys.readouterr()
    lines = "The dog saw a duck.\n\nA big cat liked the tree.\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    assert main(["tag", "--checkpoint", str(out)]) == 0
    text = capsys.readouterr().out
    sentences = [s for s in text.split("\n\n") if s.strip()]
    assert len(sentences) == 2
    rows = [ln.split("\t") for ln in sentences[0].splitlines() if not ln.startswith("#")]
    assert [r[1] for r in rows] == ["The", "dog", "saw", "a", "duck", "."]
    assert [r[3] for r in rows] == ["DET", "NOUN", "VERB", "DET", "NOUN", "PUNCT"]
    path = tmp_path / "tagged.conllu"
    path.write_text(text, encoding="utf-8")
    assert len(read_conllu(path)) == 2  # valid CoNLL-U


def test_resume_after_an_interrupt_equals_the_uninterrupted_run(treebank, tmp_path, capsys):
    common = ["--data", str(treebank), "--epochs", "3", *SMALL]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert main(["train", "tagger", "--out", str(whole), *common]) == 0
    assert main(["train", "tagger", "--out", str(whole), *common]) == 2  # not overwritten
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "tagger", "--out", str(part), "--max-steps", "25", *common]) == 0
    assert main(["train", "tagger", "--out", str(part), "--resume", "--max-steps", "0",
                 "--no-progress"]) == 0
    strip = [{k: v for k, v in r.items() if not k.endswith("_per_s")} for r in _records(whole)]
    assert strip == [{k: v for k, v in r.items() if not k.endswith("_per_s")}
                     for r in _records(part)]


def test_bad_inputs_are_one_clear_line(treebank, tmp_path, capsys, lm_run):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x-ud-train.conllu").write_text("", encoding="utf-8")
    (empty / "x-ud-dev.conllu").write_text("", encoding="utf-8")
    assert main(["train", "tagger", "--data", str(empty), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnlab: error: ") and len(err.strip().splitlines()) == 1
    assert main(["train", "tagger", "--data", str(tmp_path / "none"), "--out",
                 str(tmp_path / "r")]) == 2
    assert "expected a directory" in capsys.readouterr().err
    # a checkpoint of another task
    capsys.readouterr()
    assert main(["tag", "--checkpoint", str(lm_run), str(treebank / "toy-ud-dev.conllu")]) == 2
    assert "expected a tagger checkpoint" in capsys.readouterr().err
    # tagging: bytes that are not UTF-8, an empty CoNLL-U file, a text without sentences
    run = tmp_path / "run"
    assert main(["train", "tagger", "--data", str(treebank), "--out", str(run), "--epochs", "1",
                 *SMALL]) == 0
    capsys.readouterr()
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    empty_conllu, blank = tmp_path / "empty.conllu", tmp_path / "blank.txt"
    empty_conllu.write_text("", encoding="utf-8")
    blank.write_text("\n \n", encoding="utf-8")
    for args, message in ((["--text", str(latin)], "UTF-8"), ([str(empty_conllu)], "empty"),
                          (["--text", str(blank)], "")):
        assert main(["tag", "--checkpoint", str(run), *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("rnnlab: error: ") and len(err.strip().splitlines()) == 1, err
        assert message in err


def test_unseen_tags_are_warned_once_and_counted_wrong(treebank, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "tagger", "--data", str(treebank), "--out", str(out), "--epochs", "1",
                 *SMALL]) == 0
    capsys.readouterr()
    odd = tmp_path / "odd.conllu"
    odd.write_text("1\tdog\tdog\tINTJ\tUH\t_\t0\troot\t_\t_\n\n", encoding="utf-8")
    assert main(["eval", "tagger", "--checkpoint", str(out), "--data", str(odd)]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("never seen in training") == 2  # once for UPOS, once for XPOS
    assert "UPOS accuracy 0.00%" in captured.out
    # a sentence far longer than any seen, characters never seen: tagged, no crash
    long = tmp_path / "long.txt"
    long.write_text(" ".join(["zebra", "ünïcödé", "dog"] * 100) + "\n", encoding="utf-8")
    assert main(["tag", "--checkpoint", str(out), "--text", str(long)]) == 0
    assert len([ln for ln in capsys.readouterr().out.splitlines() if ln[:1].isdigit()]) == 300


def test_vocabs_and_length_batches(treebank):
    sentences = read_conllu(treebank / "toy-ud-train.conllu")
    v = Vocabs.build(sentences, min_freq=2)
    assert v.tags["upos"] == ["ADJ", "DET", "NOUN", "PUNCT", "VERB"]
    assert Vocabs.from_dict(json.loads(json.dumps(v.to_dict()))).to_dict() == v.to_dict()
    lengths = [len(s.forms()) for s in sentences]
    batches = length_batches(lengths, 16, np.random.default_rng(0))
    assert sorted(i for b in batches for i in b) == list(range(len(sentences)))
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) <= 1 for b in batches)


def test_the_most_frequent_tag_baseline_by_hand():
    from rnnlab.data.conllu import parse_conllu
    from rnnlab.tasks.tagging import most_frequent_tag

    def sent(pairs):
        rows = [f"{i}\t{f}\t_\t{t}\t_\t_\t0\tdep\t_\t_" for i, (f, t) in enumerate(pairs, 1)]
        return "\n".join(rows) + "\n\n"

    train = parse_conllu(sent([("the", "DET"), ("duck", "NOUN"), ("duck", "VERB")])
                         + sent([("duck", "NOUN"), ("runs", "VERB"), ("the", "DET")]))
    # duck -> NOUN (2 of 3); an unseen word -> the most frequent tag: DET, NOUN and VERB have
    # 2 each: the first in sorted order, DET
    test = parse_conllu(sent([("duck", "NOUN"), ("duck", "VERB"), ("geese", "NOUN"),
                              ("the", "DET")]))
    assert most_frequent_tag(train, test) == 2 / 4
