"""The encoder-decoder as two ONNX graphs: the encoder's memory and state and every decoder
step equal rnnlab's (LSTM/GRU, layers, bidirectional encoder, each attention score, peeky),
greedy decoding in ONNX Runtime alone gives rnnlab's tokens, and ``rnnlab export`` of a run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import ort_session, require_module

from rnnlab.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnlab.tasks.seq2seq.export import decoder_graph, encoder_graph
from rnnlab.tasks.seq2seq.translate import greedy_decode


def _greedy(encoder, decoder, src, lengths, bos, eos, limit):
    """Greedy decoding with the two sessions only: per sequence, the tokens up to <eos>."""
    names = [i.name for i in decoder.get_inputs()]
    enc = dict(zip([o.name for o in encoder.get_outputs()],
                   encoder.run(None, {"src": src, "src_lengths": lengths}), strict=True))
    state = {n: enc[n] for n in ("h", "c") if n in names}
    y, tokens, done = np.full(src.shape[1], bos, np.int64), [], np.zeros(src.shape[1], bool)
    for _ in range(limit):
        feeds = {"y_prev": y, "memory": enc["memory"], "src_lengths": lengths, **state}
        if "summary" in names:
            feeds["summary"] = enc["summary"]
        out = dict(zip([o.name for o in decoder.get_outputs()], decoder.run(None, feeds),
                       strict=True))
        state = {n: out[f"{n}_n"] for n in state}
        y = out["log_probs"].argmax(axis=1)
        tokens.append(np.where(done, -1, y))
        done |= y == eos
        if done.all():
            break
    rows = np.stack(tokens, axis=1)
    return [[int(t) for t in row if t >= 0 and t != eos] for row in rows], out


@pytest.mark.parametrize("cell, layers, bidirectional, attention, peeky", [
    ("lstm", 1, False, "none", False), ("gru", 2, True, "dot", False),
    ("lstm", 2, True, "general", True), ("gru", 1, False, "additive", True),
    ("lstm", 1, True, "additive", False), ("gru", 2, False, "none", True),
])
def test_graphs_equal_rnnlab(cell, layers, bidirectional, attention, peeky):
    onnx = require_module("onnx")
    cfg = Seq2SeqConfig(src_vocab=9, tgt_vocab=8, cell=cell, embed_size=4, hidden_size=5,
                        num_layers=layers, bidirectional=bidirectional, attention=attention,
                        peeky=peeky)
    model = Seq2Seq(cfg, seed=11)
    model.eval()
    enc_data = encoder_graph(model, 17).to_bytes(producer_version="test")
    dec_data = decoder_graph(model, 17).to_bytes(producer_version="test")
    for data in (enc_data, dec_data):
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    encoder, decoder = ort_session(enc_data), ort_session(dec_data)
    rng = np.random.default_rng(0)
    src = rng.integers(0, 9, (6, 4)).astype(np.int64)
    lengths = np.array([6, 1, 4, 3], np.int64)

    memory = model.encode(src, lengths, decoding=True)
    got = dict(zip([o.name for o in encoder.get_outputs()],
                   encoder.run(None, {"src": src, "src_lengths": lengths}), strict=True))
    state = memory.state if isinstance(memory.state, tuple) else (memory.state,)
    expected = {"memory": memory.outputs, "summary": memory.summary,
                **dict(zip(["h", "c"], state, strict=False))}
    assert set(got) == set(expected)
    for k, v in expected.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-5)

    decoded = greedy_decode(model, src, lengths, bos=1, eos=2, max_length=7)
    tokens, _ = _greedy(encoder, decoder, src, lengths, 1, 2, 7)
    assert tokens == [d.ids for d in decoded]

    y = rng.integers(0, 8, 4).astype(np.int64)  # one step from the encoder's state
    logp, new_state, weights = model.decode_step(y, memory.state, memory)
    feeds = {"y_prev": y, "memory": memory.outputs, "src_lengths": lengths,
             **dict(zip(["h", "c"], state, strict=False))}
    if peeky:
        feeds["summary"] = memory.summary
    out = dict(zip([o.name for o in decoder.get_outputs()], decoder.run(None, feeds),
                   strict=True))
    np.testing.assert_allclose(out["log_probs"], logp, rtol=1e-5, atol=1e-5)
    new_state = new_state if isinstance(new_state, tuple) else (new_state,)
    for n, v in zip(["h_n", "c_n"], new_state, strict=False):
        np.testing.assert_allclose(out[n], v, rtol=1e-5, atol=1e-5)
    if attention != "none":
        np.testing.assert_allclose(out["weights"], weights, rtol=1e-5, atol=1e-5)
        assert (out["weights"][1, 1:] == 0).all()  # past the source's end


def test_export_of_a_trained_run(tmp_path, capsys):
    from rnnlab.cli.main import main
    from rnnlab.data.pairs import encode
    from rnnlab.tasks.seq2seq.task import load_seq2seq

    onnx = require_module("onnx")
    run = tmp_path / "run"
    assert main(["train", "seq2seq", "--data", "addition", "--size", "200", "--epochs", "1",
                 "--attention", "dot", "--reverse", "--peeky", "--hidden", "8", "--embed", "4",
                 "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "add.onnx"
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    assert "add.encoder.onnx" in capsys.readouterr().out
    meta = json.loads((tmp_path / "add.json").read_text(encoding="utf-8"))
    paths = [tmp_path / meta[part]["model"] for part in ("encoder", "decoder")]
    for p in paths:
        onnx.checker.check_model(onnx.load(os.fspath(p)), full_check=True)
    assert not out.exists()  # the two graphs and the JSON only

    model, src_vocab, _, _, _ = load_seq2seq(run)
    assert meta["reverse_source"] and meta["src_vocab"] == src_vocab.to_dict()
    src, lengths = encode(["12+7", "350+41", "9+9"], src_vocab, reverse=True)
    decoded = greedy_decode(model, src, lengths, meta["bos"], meta["eos"], 8)
    tokens, _ = _greedy(*(ort_session(os.fspath(p)) for p in paths), src, lengths, meta["bos"],
                        meta["eos"], 8)
    assert tokens == [d.ids for d in decoded]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from rnnlab.cli.main import main

    run = tmp_path_factory.mktemp("s2s") / "run"
    assert main(["train", "seq2seq", "--data", "addition", "--size", "50", "--epochs", "1",
                 "--hidden", "4", "--embed", "3", "--out", str(run), "--no-progress"]) == 0
    return run


def test_export_writes_its_three_files_together_or_none(tiny_run, tmp_path, capsys,
                                                        monkeypatch):
    """The encoder, the decoder and the JSON land as one set: a failure part way (here the
    third rename) leaves the files of an earlier export as they were, and nothing new."""
    from rnnlab.cli.main import main

    run = tiny_run
    out = tmp_path / "export" / "add.onnx"
    out.parent.mkdir()
    names = ["add.decoder.onnx", "add.encoder.onnx", "add.json"]
    for name in names[1:]:  # an earlier export's files; no decoder among them
        (out.parent / name).write_bytes(b"old " + name.encode())
    real_replace, calls = os.replace, []

    def replace(*args):
        calls.append(args)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_replace(*args)

    monkeypatch.setattr(os, "replace", replace)
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "expected a writable file path" in err and "No space left" in err, err
    monkeypatch.undo()
    assert sorted(os.listdir(out.parent)) == names[1:]  # no temporary or kept-old file either
    for name in names[1:]:
        assert (out.parent / name).read_bytes() == b"old " + name.encode()

    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    assert sorted(os.listdir(out.parent)) == names
    meta = json.loads((out.parent / "add.json").read_text(encoding="utf-8"))
    assert (meta["encoder"]["model"], meta["decoder"]["model"]) == tuple(names[1::-1])


def test_export_at_an_opset_too_old_names_the_one_needed(tiny_run, tmp_path, capsys):
    from rnnlab.cli.main import main

    out = tmp_path / "add.onnx"
    assert main(["export", "--checkpoint", str(tiny_run), "--out", str(out),
                 "--opset", "10"]) == 2
    err = capsys.readouterr().err
    assert "Range needs opset 11 or newer, got opset 10" in err and err.count("\n") == 1, err
    assert os.listdir(tmp_path) == []
