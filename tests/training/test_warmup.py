"""Learning-rate warm-up: step s < W runs at (s + 1) / W of the scheduled rate, then the
schedule's own; the saved lr is the schedule's."""

from __future__ import annotations

import numpy as np

from rnnlab.data.text import load_corpus
from rnnlab.models.language_model import LanguageModel, LMConfig
from rnnlab.tasks.lm.task import LMTask, TrainConfig
from rnnlab.training import Trainer


def _trainer(lr: float, warmup: int) -> Trainer:
    corpus = load_corpus(None, level="char")
    model = LanguageModel(LMConfig(vocab_size=len(corpus.vocab), hidden_size=8, embed_size=4,
                                   num_layers=1, dtype="float64"), seed=0)
    cfg = TrainConfig(batch_size=2, bptt=4, optimizer="sgd", lr=lr, clip=0.0,
                      warmup_steps=warmup, save_minutes=0)
    trainer = Trainer(LMTask(model, corpus, cfg), None, log=lambda *_: None, progress=False)
    trainer.task.epoch_batches(1, 0)
    return trainer


def _steps(trainer: Trainer, lrs=None, n: int = 1) -> dict:
    for i in range(n):
        if lrs is not None:
            trainer.optimizer.lr = lrs[i]
        trainer.train_step(trainer.task.batch(i))
        trainer.step += 1
    return {k: v.copy() for k, v in trainer.model.parameters().items()}


def test_warmup_scales_the_first_steps_learning_rate_linearly():
    warm = _trainer(0.8, warmup=4)
    got = _steps(warm, n=5)
    assert warm.optimizer.lr == 0.8  # the schedule's rate is kept, not the warmed one
    plain = _trainer(0.8, warmup=0)
    want = _steps(plain, lrs=[0.2, 0.4, 0.6, 0.8, 0.8], n=5)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-14)
    unwarmed = _steps(_trainer(0.8, warmup=0), n=5)
    assert any(not np.allclose(got[k], unwarmed[k]) for k in got)  # it did change the steps
