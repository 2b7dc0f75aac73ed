"""The tagger (word + character BiLSTM features, stacked BiLSTM, one head per tag set): its loss
and every gradient against the same model written in torch.nn (float64), and against central
differences; prediction; bad configurations."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_module
from numerics import central_difference

from rnnlab.models.tagger import Tagger, TaggerBatch, TaggerConfig

HEADS = {"upos": 5, "xpos": 7}


def _config(**kw) -> TaggerConfig:
    return TaggerConfig(**{"words": 9, "chars": 6, "heads": HEADS, "word_dim": 4, "char_dim": 3,
                           "char_hidden": 2, "hidden": 3, "layers": 2, "dropout": 0.0,
                           "word_dropout": 0.0, "dtype": "float64", **kw})


def _batch(seed: int = 0) -> TaggerBatch:
    g = np.random.default_rng(seed)
    lengths = np.array([4, 2, 3])
    T, B = 4, 3
    spellings_len = np.array([3, 1, 2, 4, 2])  # 5 distinct spellings
    spellings = np.zeros((4, 5), np.int64)
    for u, n in enumerate(spellings_len):
        spellings[:n, u] = g.integers(1, 6, n)
    words = g.integers(1, 9, (T, B))
    spelling = g.integers(0, 5, (T, B))
    mask = np.arange(T)[:, None] < lengths[None, :]
    words[~mask], spelling[~mask] = 0, 0
    tags = {k: g.integers(0, n, (T, B)) * mask for k, n in HEADS.items()}
    return TaggerBatch(words, lengths, spelling, spellings, spellings_len, tags)


def _torch_loss(torch, model: Tagger, batch: TaggerBatch):
    """The same computation in torch.nn with rnnlab's weights; returns (loss, named params)."""
    nn = torch.nn
    c = model.config
    params = {k: torch.tensor(v, requires_grad=True) for k, v in model.state_dict().items()}
    char_rnn = nn.LSTM(c.char_dim, c.char_hidden, bidirectional=True).double()
    rnn = nn.LSTM(c.input_size, c.hidden, num_layers=c.layers, bidirectional=True).double()
    for name, module in (("char_rnn", char_rnn), ("rnn", rnn)):
        for k in dict(module.named_parameters()):
            delattr(module, k)
            setattr(module, k, params[f"{name}.{k}"])
        module._flat_weights = [getattr(module, n) for n in module._flat_weights_names]
    pack = nn.utils.rnn.pack_padded_sequence
    chars = params["char_embedding.weight"][torch.from_numpy(batch.spellings)]
    _, (h_n, _) = char_rnn(pack(chars, torch.from_numpy(batch.spelling_lengths),
                                enforce_sorted=False))
    spelled = torch.cat([h_n[0], h_n[1]], dim=-1)
    x = torch.cat([params["word_embedding.weight"][torch.from_numpy(batch.words)],
                   spelled[torch.from_numpy(batch.spelling)]], dim=-1)
    h, _ = rnn(pack(x, torch.from_numpy(batch.lengths), enforce_sorted=False))
    h, _ = nn.utils.rnn.pad_packed_sequence(h, total_length=batch.words.shape[0])
    mask = torch.from_numpy(batch.mask)
    loss = 0.0
    for k in HEADS:
        logits = h @ params[f"{k}_head.weight"].T + params[f"{k}_head.bias"]
        gold = torch.from_numpy(batch.tags[k])
        if model.config.output == "crf":
            from torchcrf import CRF as TorchCRF  # pytorch-crf, the test extra's oracle

            crf = TorchCRF(HEADS[k]).double()
            for name in ("start_transitions", "end_transitions", "transitions"):
                delattr(crf, name)
                setattr(crf, name, params[f"{k}_crf.{name}"])
            nll = -crf(logits, gold, mask=mask, reduction="sum")
        else:
            nll = nn.functional.cross_entropy(logits[mask], gold[mask], reduction="sum")
        loss = loss + nll
    return loss, params


@pytest.mark.parametrize("output", ["softmax", "crf"])
def test_loss_and_gradients_equal_torch(torch, output):
    if output == "crf":
        require_module("torchcrf")
    model = Tagger(_config(output=output), seed=0)
    batch = _batch()
    n = int(batch.lengths.sum())
    total, count = model.forward_loss(batch, scale=1.0 / n)
    assert count == n
    model.zero_grad()
    model.forward_loss(batch, scale=1.0 / n)
    model.backward_loss()
    loss, params = _torch_loss(torch, model, batch)
    assert total == pytest.approx(float(loss.detach()), rel=1e-12)
    (loss / n).backward()
    for k, p in params.items():
        np.testing.assert_allclose(model.grads[k], p.grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=k)


@pytest.mark.parametrize("output", ["softmax", "crf"])
def test_gradients_match_central_differences(output):
    model = Tagger(_config(layers=1, output=output), seed=1)
    batch = _batch(1)

    def loss() -> float:
        return model.forward_loss(batch, scale=None)[0]

    model.zero_grad()
    model.forward_loss(batch, scale=1.0)
    model.backward_loss()
    g = np.random.default_rng(0)
    for name, p in model.parameters().items():
        for idx in {tuple(int(g.integers(0, s)) for s in p.shape) for _ in range(3)}:
            numeric = central_difference(loss, p, idx)
            assert model.grads[name][idx] == pytest.approx(numeric, rel=1e-6, abs=1e-8), name


def test_crf_prediction_is_the_viterbi_path_of_the_scores():
    model = Tagger(_config(output="crf"), seed=4)
    batch = _batch(4)
    pred = model.predict(batch)
    model.eval()
    scores = model.scores(batch)
    for k in HEADS:
        expected = model.crfs[k].decode(scores[k], lengths=batch.lengths)
        assert [p.tolist() for p in pred[k]] == expected


def test_predict_is_the_argmax_of_the_scores_in_eval_mode():
    model = Tagger(_config(dropout=0.5, word_dropout=0.5), seed=2)
    batch = _batch(2)
    pred = model.predict(batch)
    assert model.training  # its mode is given back
    model.eval()
    scores = model.scores(batch)
    for k in HEADS:
        for b, n in enumerate(batch.lengths):
            np.testing.assert_array_equal(pred[k][b], scores[k][:n, b].argmax(-1))


def test_word_dropout_and_dropout_only_in_training():
    model = Tagger(_config(dropout=0.0, word_dropout=0.9), seed=3)
    batch = _batch(3)
    model.eval()
    a = model.forward_loss(batch, scale=None)[0]
    assert model.forward_loss(batch, scale=None)[0] == a  # deterministic in eval mode
    model.train()
    assert model.forward_loss(batch, scale=None)[0] != a  # words become <unk> in training


@pytest.mark.parametrize("kw,message", [
    ({"heads": {}}, "heads: expected a dict"),
    ({"output": "hmm"}, "output: expected one of"),
    ({"dropout": 1.0}, r"dropout: expected a probability in \[0, 1\)"),
    ({"hidden": 0}, "hidden"),
])
def test_bad_configs_are_one_line_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        _config(**kw)


def test_num_parameters_counts_the_built_model():
    for output in ("softmax", "crf"):
        cfg = _config(output=output)
        assert cfg.num_parameters() == sum(p.size for p in Tagger(cfg).parameters().values())
