"""``rnnlab export`` on trained language models: ONNX Runtime's logits and states equal
rnnlab's, a whole generation run step by step in ONNX Runtime alone, and bad inputs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import ort_session, require_module
from treebank_helpers import write_treebank

from rnnlab.cli.main import main
from rnnlab.tasks.lm.task import load_run


def _train(tmp_path, name, *options):
    out, text = tmp_path / name, tmp_path / "lm.txt"
    text.write_text("the cat sat on the mat. a dog ran.\n" * 40, encoding="utf-8")
    assert main(["train", "lm", "--data", str(text), "--out", str(out), "--max-steps", "3",
                 "--batch-size", "2", "--bptt", "5", "--samples", "0", "--no-progress",
                 *options]) == 0
    return out



@pytest.mark.parametrize("options", [
    ("--cell", "lstm", "--layers", "2", "--hidden", "6", "--embed", "4"),
    ("--cell", "gru", "--layers", "1", "--hidden", "5", "--embed", "5", "--tie"),
    ("--cell", "rnn", "--layers", "3", "--hidden", "4", "--embed", "3"),
], ids=["lstm2", "gru-tied", "rnn3"])
def test_exported_lm_equals_rnnlab(tmp_path, options, capsys):
    onnx = require_module("onnx")
    run = _train(tmp_path, "run", *options)
    path = tmp_path / "export" / "lm.onnx"
    path.parent.mkdir()
    assert main(["export", "--checkpoint", str(run), "--out", str(path)]) == 0
    assert "lm.json" in capsys.readouterr().out
    onnx.checker.check_model(onnx.load(os.fspath(path)), full_check=True)
    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    model, vocab, state, _, _ = load_run(run)
    model.eval()
    assert meta["vocab"] == vocab.to_dict() and meta["level"] == state["data"]["level"]
    assert meta["model"] == "lm.onnx" and meta["task"] == "language_model"

    session = ort_session(path)
    assert [i.name for i in session.get_inputs()] == list(meta["inputs"])
    assert [o.name for o in session.get_outputs()] == list(meta["outputs"])
    g = np.random.default_rng(0)
    ids = g.integers(0, len(vocab), (7, 3)).astype(np.int64)
    L, H = model.rnn.num_layers, model.config.hidden_size
    feeds = {"ids": ids, **{n: g.standard_normal((L, 3, H)).astype(np.float32)
                            for n in meta["state"]}}
    got = session.run(None, feeds)
    s0 = tuple(feeds[n] for n in meta["state"])
    logits, finals = model(ids, s0 if len(s0) == 2 else s0[0])
    expected = [logits, *(finals if isinstance(finals, tuple) else (finals,))]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_greedy_generation_step_by_step_matches(tmp_path):
    """What a deployment does: one token at a time, the state fed back, argmax."""
    run = _train(tmp_path, "run", "--cell", "lstm", "--layers", "2", "--hidden", "8",
                 "--embed", "4")
    path = tmp_path / "lm.onnx"
    assert main(["export", "--checkpoint", str(run), "--out", str(path)]) == 0
    meta = json.loads((tmp_path / "lm.json").read_text(encoding="utf-8"))
    session = ort_session(path)
    itos = meta["vocab"]["itos"]
    state = {n: np.zeros([1 if d == "batch" else d for d in meta["inputs"][n]["shape"]],
                         np.float32) for n in meta["state"]}
    token, ours = itos.index("t"), []
    for _ in range(20):
        logits, *new = session.run(None, {"ids": np.array([[token]], np.int64), **state})
        state = dict(zip(meta["state"], new, strict=True))
        token = int(logits[-1, 0].argmax())
        ours.append(token)

    model = load_run(run)[0]
    model.eval()
    token, s, ref = itos.index("t"), None, []
    for _ in range(20):
        logits, s = model(np.array([[token]]), s)
        token = int(logits[-1, 0].argmax())
        ref.append(token)
    assert ours == ref


def test_export_refuses_bad_input(tmp_path, capsys, lm_run):
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(lm_run), "--out", str(tmp_path / "m.json")]) == 2
    assert "expected a file name ending in .onnx" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["export", "--checkpoint", str(lm_run), "--out",
                 str(tmp_path / "missing" / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "expected a writable file path" in err and err.count("\n") == 1
    assert main(["export", "--checkpoint", str(lm_run), "--out", str(out), "--opset", "9"]) == 2
    assert "opset: expected an int from" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "m.json").exists()


def test_export_refuses_a_task_not_exportable_yet(tmp_path, capsys):
    from rnnlab.io.checkpoint import save_checkpoint

    run = tmp_path / "run"
    save_checkpoint(run / "checkpoint", {"w": np.zeros(2, np.float32)}, {"kind": "frobnicator"})
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "expected a checkpoint of language_model, tagger, forecaster, speech" in err
    assert "got a frobnicator checkpoint" in err
    assert not (tmp_path / "m.onnx").exists()


# ----------------------------------------------------------------------------- tagger

@pytest.mark.parametrize("output", ["softmax", "crf"])
def test_exported_tagger_equals_rnnlab(tmp_path, output):
    from rnnlab.data.conllu import read_conllu
    from rnnlab.nn.crf import CRF
    from rnnlab.tasks.tagging import encode_all, load_tagger, make_batch

    onnx = require_module("onnx")
    data = tmp_path / "ud"
    data.mkdir()
    for split, n, seed in (("train", 40, 0), ("dev", 8, 1), ("test", 8, 2)):
        write_treebank(data / f"toy-ud-{split}.conllu", n, seed)
    run = tmp_path / "run"
    assert main(["train", "tagger", "--data", str(data), "--out", str(run), "--max-steps", "3",
                 "--word-dim", "5", "--char-dim", "4", "--char-hidden", "3", "--hidden", "6",
                 "--layers", "2", "--batch-size", "8", "--output", output,
                 "--no-progress"]) == 0
    path = tmp_path / "tagger.onnx"
    assert main(["export", "--checkpoint", str(run), "--out", str(path)]) == 0
    onnx.checker.check_model(onnx.load(os.fspath(path)), full_check=True)
    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    model, vocabs, _, _, _ = load_tagger(run)
    assert meta["decode"] == ("viterbi" if output == "crf" else "argmax")
    assert meta["tags"] == vocabs.tags and meta["words"]["itos"] == vocabs.words.itos

    sentences = read_conllu(data / "toy-ud-dev.conllu")[:5]
    batch = make_batch(encode_all(sentences, vocabs, with_tags=False), vocabs, with_tags=False)
    feeds = {n: getattr(batch, n) for n in meta["inputs"]}
    got = dict(zip(meta["outputs"], ort_session(path).run(None, feeds), strict=True))
    expected = model.scores(batch)
    predicted = model.predict(batch)
    for k, scores in expected.items():
        np.testing.assert_allclose(got[f"{k}_scores"], scores, rtol=1e-5, atol=1e-5)
        if output == "crf":  # Viterbi with the JSON's scores, as a user would decode
            crf = CRF(len(meta["tags"][k]))
            crf.load_state_dict({n: np.asarray(v, np.float32) for n, v in meta["crf"][k].items()})
            tags = crf.decode(got[f"{k}_scores"], lengths=batch.lengths)
        else:
            best = got[f"{k}_scores"].argmax(-1)
            tags = [best[:n, b].tolist() for b, n in enumerate(batch.lengths)]
        assert tags == [p.tolist() for p in predicted[k]]
