"""One training step of the engine against PyTorch on the same weights: the loss and its scale
(``mean`` over tokens, or ``sum_time``: summed over the window, averaged over the streams), the
gradient norm before clipping, the clipping itself and the optimizer's update; then a run of
steps, whose losses follow torch's step for step and go down."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab.data.text import load_corpus
from rnnlab.models import LanguageModel, LMConfig
from rnnlab.tasks.lm.task import LMTask, TrainConfig
from rnnlab.training import Trainer

TEXT = "".join(f"to be or not to be, {i % 5} that is the question\n" for i in range(40))


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return load_corpus(str(path), level="char")


def _pair(torch, corpus, cell, **train):
    """An rnnlab Trainer on a float64 LM, and the same model in torch with copied weights."""
    cfg = TrainConfig(batch_size=3, bptt=7, eval_batch_size=2, log_every=1000, **train)
    model = LanguageModel(LMConfig(vocab_size=len(corpus.vocab), cell=cell, embed_size=5,
                                   hidden_size=6, num_layers=2, dtype="float64"), seed=3)
    trainer = Trainer(LMTask(model, corpus, cfg), None, log=lambda _: None, progress=False)
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    ref = torch.nn.ModuleDict({
        "embedding": torch.nn.Embedding(len(corpus.vocab), 5),
        "rnn": rnn(5, 6, num_layers=2),
        "decoder": torch.nn.Linear(6, len(corpus.vocab)),
    }).double()
    ref.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
    params = list(ref.parameters())
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr)
    return trainer, ref, opt, cfg


def _torch_step(torch, ref, opt, cfg, x, y, state):
    T, B = x.shape
    opt.zero_grad()
    h, state = ref["rnn"](ref["embedding"](torch.from_numpy(x)), state)
    logits = ref["decoder"](h)  # (T, B, V)
    nll = torch.nn.functional.cross_entropy(logits.reshape(T * B, -1),
                                            torch.from_numpy(y).reshape(-1), reduction="sum")
    loss = nll / B if cfg.loss == "sum_time" else nll / (T * B)  # what is differentiated
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), cfg.clip)  # the norm before
    opt.step()
    detached = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
    return float(nll.detach()) / (T * B), float(norm), detached


def _assert_same_weights(torch, trainer, ref, rtol=1e-10):
    ours = trainer.model.state_dict()
    for k, v in ref.state_dict().items():
        np.testing.assert_allclose(ours[k], v.numpy(), rtol=rtol, atol=rtol / 10, err_msg=k)


@pytest.mark.parametrize("loss", ["mean", "sum_time"])
@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.0), ("sgd", 0.9), ("adam", 0.0)])
@pytest.mark.parametrize("clip", [0.05, 100.0])  # clipping applied / not reached
def test_one_step_equals_torch(torch, corpus, loss, optimizer, momentum, clip):
    trainer, ref, opt, cfg = _pair(torch, corpus, "lstm", loss=loss, optimizer=optimizer,
                                   momentum=momentum, lr=0.5 if optimizer == "sgd" else 0.01,
                                   clip=clip)
    task = trainer.task
    task.epoch_batches(1, 0)
    x, y = task.batch(0)
    our_loss, our_norm = trainer.train_step((x, y))
    ref_loss, ref_norm, _ = _torch_step(torch, ref, opt, cfg, x, y, None)
    assert our_loss == pytest.approx(ref_loss, rel=1e-12)
    assert our_norm == pytest.approx(ref_norm, rel=1e-10)
    assert (our_norm > clip) == (clip == 0.05)  # the case really clips (or really does not)
    _assert_same_weights(torch, trainer, ref)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_training_follows_torch_step_for_step_and_lowers_the_loss(torch, corpus, cell):
    """Four epochs of windows with the state carried between them (truncated BPTT)."""
    trainer, ref, opt, cfg = _pair(torch, corpus, cell, optimizer="adam", lr=0.03, clip=5.0,
                                   loss="sum_time")
    task = trainer.task
    ours, theirs = [], []
    for epoch in (1, 2, 3, 4):
        n = task.epoch_batches(epoch, 0)  # resets the carried state, as the Trainer's epoch does
        state = None
        for i in range(n):
            x, y = task.batch(i)
            ours.append(trainer.train_step((x, y))[0])
            loss, _, state = _torch_step(torch, ref, opt, cfg, x, y, state)
            theirs.append(loss)
    per_epoch = len(ours) // 4
    np.testing.assert_allclose(ours[:per_epoch], theirs[:per_epoch], rtol=1e-10)
    # hundreds of Adam steps (whose update m / sqrt(v) magnifies the last bits where v is tiny)
    # grow float64 rounding differences between the two implementations to ~1e-8 by the end
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    _assert_same_weights(torch, trainer, ref, rtol=1e-6)
    first, last = np.mean(ours[:per_epoch]), np.mean(ours[-per_epoch:])
    assert last < first - 0.4, (first, last)  # it learns
