"""The speech model's ONNX graph equals ``log_probs`` (pooled classifier: mean, last,
attention; CTC; frame stacking; LSTM/GRU, uni/bidirectional), an opset too old for one of its
operators is named, and ``rnnlab export`` of trained runs (a classifier and CTC)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from audio_helpers import write_corpus
from conftest import ort_session, require_module

from rnnlab.models.classifier import ClassifierConfig, SequenceClassifier
from rnnlab.tasks.speech.export import speech_graph


@pytest.mark.parametrize("output, pool, stack, cell, layers, bidirectional", [
    ("class", "mean", 1, "lstm", 2, True), ("class", "mean", 3, "gru", 1, False),
    ("class", "last", 1, "gru", 2, True), ("class", "last", 2, "lstm", 1, False),
    ("class", "attention", 1, "lstm", 1, True), ("class", "attention", 4, "gru", 2, True),
    ("ctc", "mean", 1, "lstm", 2, True), ("ctc", "mean", 3, "gru", 1, False),
])
def test_graph_equals_log_probs(output, pool, stack, cell, layers, bidirectional):
    onnx = require_module("onnx")
    cfg = ClassifierConfig(inputs=4, classes=5, cell=cell, hidden=6, layers=layers,
                           bidirectional=bidirectional, pool=pool, output=output, stack=stack,
                           attn_size=3)
    model = SequenceClassifier(cfg, seed=3).eval()
    g = speech_graph(model, 17)
    data = g.to_bytes(producer_version="test")
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    session = ort_session(data)
    rng = np.random.default_rng(0)
    for T, lengths in ((10, [10, 1, 7, 4]), (7, [7]), (5, [2, 5])):
        x = rng.standard_normal((T, len(lengths), 4)).astype(np.float32)
        lengths = np.array(lengths, np.int64)
        logp, steps = model.log_probs(x, lengths)
        got_logp, got_steps = session.run(None, {"features": x, "lengths": lengths})
        np.testing.assert_array_equal(got_steps, steps)
        if output == "ctc":  # compare within each utterance's steps
            valid = np.arange(len(logp))[:, None] < steps[None, :]
            logp, got_logp = logp[valid], got_logp[valid]
        np.testing.assert_allclose(got_logp, logp, rtol=1e-5, atol=1e-5)


def test_opset_too_old_for_mean_pooling_names_the_one_needed():
    model = SequenceClassifier(ClassifierConfig(inputs=2, classes=3, hidden=4, layers=1), seed=0)
    with pytest.raises(ValueError, match=r"ReduceSum \(axes as an input\) needs opset 13 or "
                                         r"newer, got opset 12"):
        speech_graph(model, 12)


@pytest.mark.parametrize("task", ["digits", "connected"])
def test_export_of_a_trained_run(tmp_path, task):
    from scipy.io import wavfile

    from rnnlab.cli.main import main
    from rnnlab.data.features import FeatureConfig, features
    from rnnlab.tasks.speech.task import load_speech, pad_frames

    onnx = require_module("onnx")
    corpus = write_corpus(tmp_path / "tones")
    run = tmp_path / "run"
    extra = (["--utterances", "16", "--eval-utterances", "4", "--max-len", "2"]
             if task == "connected" else ["--stack", "2"])
    assert main(["train", "speech", "--data", str(corpus), "--task", task, "--out", str(run),
                 "--max-steps", "2", "--hidden", "6", "--layers", "1", "--no-progress",
                 "--valid", "0.34", *extra]) == 0
    path = tmp_path / "speech.onnx"
    assert main(["export", "--checkpoint", str(run), "--out", str(path)]) == 0
    onnx.checker.check_model(onnx.load(os.fspath(path)), full_check=True)
    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    sm, _, _ = load_speech(run)
    assert meta["classes"] == sm.classes and meta["output"] == sm.model.config.output

    fcfg = FeatureConfig(**meta["features"])  # the JSON's settings rebuild the features
    wavs = sorted(corpus.rglob("*.wav"))[:3]
    feats = [features(wavfile.read(w)[1].astype(np.float64), fcfg) for w in wavs]
    x, lengths = pad_frames(feats, np.float32)
    logp, steps = sm.model.log_probs(x, lengths)
    got, got_steps = ort_session(path.read_bytes()).run(None, {"features": x, "lengths": lengths})
    np.testing.assert_array_equal(got_steps, steps)
    if task == "connected":
        valid = np.arange(len(logp))[:, None] < steps[None, :]
        logp, got = logp[valid], got[valid]
    np.testing.assert_allclose(got, logp, rtol=1e-5, atol=1e-5)
