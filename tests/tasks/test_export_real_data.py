"""Every exportable model on real inputs (the datasets in ../shared/data): ONNX Runtime's
outputs equal rnnlab's to 1e-5 on Tiny Shakespeare text, UD English EWT sentences, the airline
passengers series, FSDD recordings and the addition pairs. The weights are a fresh model's; the
inputs are real (their lengths, vocabularies, feature ranges)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ort_session, shared_data


def _run(g, feeds):
    session = ort_session(g.to_bytes(producer_version="test"))
    return dict(zip(g.signature["outputs"], session.run(None, feeds), strict=True))


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_language_model_on_tiny_shakespeare(cell):
    from rnnlab.data.text import Vocabulary
    from rnnlab.models.language_model import LanguageModel, LMConfig
    from rnnlab.tasks.lm.export import lm_graph

    text = shared_data("tinyshakespeare/input.txt").read_text(encoding="utf-8")[:4000]
    vocab = Vocabulary.build(list(text), level="char")
    ids = vocab.encode(list(text[:600])).reshape(4, 150).T.copy()  # (150, 4): 4 streams
    model = LanguageModel(LMConfig(len(vocab), cell=cell, embed_size=16, hidden_size=32,
                                   num_layers=2), seed=0)
    model.eval()
    L, H = 2, 32
    names = ["h0", "c0"][:1 + (cell == "lstm")]
    state = {n: np.zeros((L, 4, H), np.float32) for n in names}
    got = _run(lm_graph(model, 17), {"ids": ids, **state})
    logits, finals = model(ids)
    _close(got["logits"], logits)
    for n, f in zip(names, finals if cell == "lstm" else (finals,), strict=True):
        _close(got[n.replace("0", "_n")], f)


def test_tagger_on_ud_english_ewt():
    from rnnlab.data.conllu import read_conllu
    from rnnlab.models.tagger import Tagger, TaggerConfig
    from rnnlab.tasks.tagging import Vocabs, encode_all, make_batch
    from rnnlab.tasks.tagging_export import tagger_graph

    sentences = read_conllu(shared_data("ud-english-ewt/en_ewt-ud-dev.conllu"))[:48]
    vocabs = Vocabs.build(sentences, min_freq=1)
    heads = {h: len(t) for h, t in vocabs.tags.items()}
    model = Tagger(TaggerConfig(len(vocabs.words), len(vocabs.chars), heads, word_dim=12,
                                char_dim=8, char_hidden=8, hidden=16, layers=2, output="crf"),
                   seed=0)
    model.eval()
    batch = make_batch(encode_all(sentences, vocabs, with_tags=False), vocabs, with_tags=False)
    got = _run(tagger_graph(model, 17), {n: getattr(batch, n) for n in
                                         ("words", "lengths", "spellings", "spelling_lengths",
                                          "spelling")})
    for k, scores in model.scores(batch).items():
        _close(got[f"{k}_scores"], scores)


def test_forecaster_on_airline_passengers():
    from rnnlab.data.series import calendar_size, read_series
    from rnnlab.models.forecaster import ForecasterConfig, make_forecaster
    from rnnlab.tasks.forecast.export import forecaster_graph
    from rnnlab.tasks.forecast.windows import Features, Scaler, step_features, windows

    series = read_series(shared_data("timeseries/airline-passengers.csv"))
    features = Features(series.freq, 0, calendar_size(series.freq))
    steps = step_features(series, Scaler.fit(series, "log"), features)
    x = windows(steps, np.arange(23, len(series), 7), 24, features.relative)
    for output, members in (("gaussian", 2), ("quantile", 1)):
        model = make_forecaster(ForecasterConfig(inputs=x.shape[2], horizon=6, hidden=16,
                                                 layers=2, output=output, ar=12,
                                                 members=members), seed=0).eval()
        got = _run(forecaster_graph(model, 17), {"window": x.astype(np.float32)})
        expected = model.distribution(x)
        for k, v in got.items():
            _close(v, expected[k])


@pytest.mark.parametrize("output, pool, stack", [("class", "attention", 1), ("ctc", "mean", 3)])
def test_speech_model_on_fsdd(output, pool, stack):
    from rnnlab.data.audio import read_wav
    from rnnlab.data.features import FeatureConfig, features
    from rnnlab.models.classifier import ClassifierConfig, SequenceClassifier
    from rnnlab.tasks.speech.export import speech_graph
    from rnnlab.tasks.speech.task import pad_frames

    cfg = FeatureConfig()
    root = shared_data("fsdd") / "recordings"
    feats = [features(read_wav(root / f"{d}_george_{k}.wav", rate=cfg.rate)[0], cfg)
             for d, k in ((0, 0), (3, 7), (7, 12), (9, 1))]
    x, lengths = pad_frames(feats, np.float32)
    model = SequenceClassifier(ClassifierConfig(inputs=x.shape[2], classes=10, hidden=16,
                                                layers=2, pool=pool, output=output,
                                                stack=stack), seed=0)
    model.eval()
    got = _run(speech_graph(model, 17), {"features": x, "lengths": lengths})
    logp, steps = model.log_probs(x, lengths)
    np.testing.assert_array_equal(got["steps"], steps)
    valid = (np.arange(len(logp))[:, None] < steps[None, :]) if output == "ctc" else ...
    _close(got["log_probs"][valid], logp[valid])


def test_seq2seq_on_addition_pairs():
    from rnnlab.data.pairs import BOS, build_vocabs, encode, read_pairs, special_id
    from rnnlab.models.seq2seq import Seq2Seq, Seq2SeqConfig
    from rnnlab.tasks.seq2seq.export import decoder_graph, encoder_graph

    pairs = read_pairs(shared_data("dlfs2-seq2seq/addition.txt"))[:64]
    src_vocab, tgt_vocab = build_vocabs(pairs)
    model = Seq2Seq(Seq2SeqConfig(len(src_vocab), len(tgt_vocab), embed_size=8, hidden_size=12,
                                  num_layers=2, bidirectional=True, attention="additive",
                                  peeky=True), seed=0)
    model.eval()
    src, lengths = encode([s for s, _ in pairs], src_vocab)
    enc = _run(encoder_graph(model, 17), {"src": src, "src_lengths": lengths})
    memory = model.encode(src, lengths, decoding=True)
    _close(enc["memory"], memory.outputs)
    y = np.full(len(pairs), special_id(tgt_vocab, BOS), np.int64)
    state = {"h": enc["h"], "c": enc["c"]}
    rnn_state, dec = memory.state, decoder_graph(model, 17)
    for _ in range(5):  # greedy steps, each compared
        out = _run(dec, {"y_prev": y, **state, "memory": enc["memory"], "src_lengths": lengths,
                         "summary": enc["summary"]})
        logp, rnn_state, weights = model.decode_step(y, rnn_state, memory)
        _close(out["log_probs"], logp)
        _close(out["weights"], weights)
        y = logp.argmax(axis=1)
        np.testing.assert_array_equal(out["log_probs"].argmax(axis=1), y)  # the same choice
        state = {"h": out["h_n"], "c": out["c_n"]}
