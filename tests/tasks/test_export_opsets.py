"""Every task graph at every supported opset: either it is refused with a message naming the
operator and the opset it needs, or ``onnx.checker`` (full check) accepts it and ONNX Runtime
loads it."""

from __future__ import annotations

import re

import pytest
from conftest import require_module

from rnnlab.io.onnx.graph import OPSETS
from rnnlab.models.classifier import ClassifierConfig, SequenceClassifier
from rnnlab.models.forecaster import ForecasterConfig, make_forecaster
from rnnlab.models.language_model import LanguageModel, LMConfig
from rnnlab.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnlab.models.tagger import Tagger, TaggerConfig
from rnnlab.tasks.forecast.export import forecaster_graph
from rnnlab.tasks.lm.export import lm_graph
from rnnlab.tasks.seq2seq.export import decoder_graph, encoder_graph
from rnnlab.tasks.speech.export import speech_graph
from rnnlab.tasks.tagging_export import tagger_graph


def _speech(**kw):
    return SequenceClassifier(ClassifierConfig(3, 4, hidden=3, layers=1, attn_size=2, **kw),
                              seed=0)


def _seq2seq(**kw):
    return Seq2Seq(Seq2SeqConfig(5, 5, hidden_size=3, embed_size=2, **kw), seed=0)


BUILDERS = {
    "lm": lambda o: lm_graph(LanguageModel(LMConfig(7, embed_size=3, hidden_size=3,
                                                    num_layers=2, tie_weights=True), seed=0), o),
    "tagger": lambda o: tagger_graph(Tagger(TaggerConfig(5, 6, {"upos": 3}, word_dim=2,
                                                         char_dim=2, char_hidden=2, hidden=3,
                                                         layers=1, output="crf"), seed=0), o),
    "forecast-gaussian": lambda o: forecaster_graph(make_forecaster(ForecasterConfig(
        3, horizon=2, hidden=3, ar=2, members=2), seed=0), o),
    "forecast-quantile": lambda o: forecaster_graph(make_forecaster(ForecasterConfig(
        3, horizon=2, hidden=3, output="quantile"), seed=0), o),
    "speech-mean-stacked": lambda o: speech_graph(_speech(stack=2), o),
    "speech-last": lambda o: speech_graph(_speech(pool="last"), o),
    "speech-attention": lambda o: speech_graph(_speech(pool="attention"), o),
    "speech-ctc": lambda o: speech_graph(_speech(output="ctc"), o),
    "seq2seq-encoder": lambda o: encoder_graph(_seq2seq(bidirectional=True), o),
    "seq2seq-decoder": lambda o: decoder_graph(_seq2seq(attention="additive", peeky=True), o),
}


@pytest.mark.parametrize("name", BUILDERS)
def test_each_opset_builds_valid_graphs_or_names_what_it_needs(name):
    onnx, ort = require_module("onnx"), require_module("onnxruntime")
    built = 0
    for opset in OPSETS:
        try:
            g = BUILDERS[name](opset)
        except ValueError as e:
            assert re.fullmatch(rf"opset: .+ needs opset \d+ or newer, got opset {opset}",
                                str(e)), e
            continue
        data = g.to_bytes(producer_version="test")
        model = onnx.load_from_string(data)
        assert model.opset_import[0].version == opset
        onnx.checker.check_model(model, full_check=True)
        ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        built += 1
    assert built >= len(OPSETS) - 3  # every graph from opset 13 on
