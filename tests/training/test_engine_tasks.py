"""The training engine, the same for every task: a signal at any step, or a periodic checkpoint
that a crash leaves behind, resumes to exactly the uninterrupted run (weights, optimizer, every
RNG, the position inside the epoch, the metrics records), for the language model, seq2seq and
the long-lag benchmark alike."""

from __future__ import annotations

import json
import os
import shutil
import signal

import numpy as np
import pytest

from rnnlab.data.pairs import build_vocabs
from rnnlab.data.text import load_corpus
from rnnlab.io import load_checkpoint
from rnnlab.models import LanguageModel, LMConfig, Seq2Seq, Seq2SeqConfig
from rnnlab.nn import is_grad_enabled
from rnnlab.tasks import longdep
from rnnlab.tasks.lm.task import LMTask, TrainConfig
from rnnlab.tasks.seq2seq.task import Seq2SeqTask, Seq2SeqTrainConfig, load_pairs, upgrade_state
from rnnlab.training import Interrupted, Trainer

TEXT = "".join(f"line {i}: the quick brown fox {i % 7} jumps over the lazy dog\n"
               for i in range(60))


def _lm_task(tmp_path, **loop):
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    corpus = load_corpus(str(path), level="char")
    model = LanguageModel(LMConfig(vocab_size=len(corpus.vocab), embed_size=8, hidden_size=12,
                                   num_layers=2, dropout=0.2), seed=0)
    cfg = TrainConfig(epochs=2, batch_size=4, bptt=16, lr=1e-2, log_every=3, eval_batch_size=3,
                      **loop)
    return LMTask(model, corpus, cfg)


def _seq2seq_task(tmp_path, **loop):
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcd"), size=rng.integers(1, 5))) for _ in range(300)]
    path = tmp_path / "reverse.tsv"
    path.write_text("".join(f"{w}\t{w[::-1]}\n" for w in words), encoding="utf-8")
    cfg = Seq2SeqTrainConfig(data=str(path), epochs=2, batch_size=16, lr=1e-2, log_every=4,
                             **loop)
    train, test, _ = load_pairs(cfg)
    src, tgt = build_vocabs(train)
    model = Seq2Seq(Seq2SeqConfig(len(src), len(tgt), embed_size=8, hidden_size=16,
                                  attention="dot"), seed=0)
    return Seq2SeqTask(model, train, test, src, tgt, cfg)


def _longdep_task(tmp_path, save_every=0):
    cfg = longdep.LongDepConfig(task="copy", T=5, hidden=8, batch=8, steps=50, eval_every=20,
                                test_size=40, stop_when_solved=False, length=3, symbols=4)
    return longdep.LongDepTask(cfg, save_every=save_every)


TASKS = {"lm": _lm_task, "seq2seq": _seq2seq_task, "longdep": _longdep_task}
STEPS = {"lm": 94, "seq2seq": 34, "longdep": 50}  # in all, over the run
EPOCH_1 = {"lm": 47, "seq2seq": 17, "longdep": 20}  # steps in epoch 1


def _records(out):
    lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(ln).items() if not k.endswith("_per_s")}
            for ln in lines]


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


def _quiet(_):
    pass


def _resumed(task, out):
    trainer = Trainer(task, out, log=_quiet, progress=False)
    weights, state, arrays = load_checkpoint(out / "checkpoint")
    trainer.restore(state, weights, arrays)
    return trainer


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("at", [5, "last step of epoch 1", "start of epoch 2"])
def test_a_signal_at_a_step_boundary_resumes_to_the_uninterrupted_run(tmp_path, name, at):
    """A signal during a step (that step still finishes), or while the next epoch's batches
    are being drawn (nothing of that epoch is trained yet, but its shuffle is drawn)."""
    full = Trainer(TASKS[name](tmp_path), tmp_path / "full", log=_quiet, progress=False)
    full.fit()
    assert full.step == STEPS[name]
    task = TASKS[name](tmp_path)
    part = Trainer(task, tmp_path / "part", log=_quiet, progress=False)
    stop_at = at if isinstance(at, int) else EPOCH_1[name]
    hook = "epoch_batches" if at == "start of epoch 2" else "step"
    original = getattr(type(task), hook)
    sent = []

    def patched(self, *args):
        result = original(self, *args)
        due = args[0] == 2 if hook == "epoch_batches" else part.step + 1 == stop_at
        if not sent and due:  # during step stop_at, or epoch 2's preparation
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    setattr(type(task), hook, patched)
    try:
        with pytest.raises(Interrupted) as info:
            part.fit()
    finally:
        setattr(type(task), hook, original)
    assert info.value.signum == signal.SIGTERM and not info.value.at_once
    state = json.loads((tmp_path / "part" / "checkpoint" / "checkpoint.json").read_text())
    assert state["step"] == stop_at
    resumed = _resumed(TASKS[name](tmp_path), tmp_path / "part")
    resumed.fit()
    assert _records(tmp_path / "part") == _records(tmp_path / "full")
    assert _same_weights(resumed.model, full.model)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_crash_after_a_periodic_checkpoint_loses_only_what_came_after(tmp_path, name):
    """The run directory as a crash leaves it after the periodic save of step 6 (and two more
    records written after it): resuming gives the uninterrupted run."""
    make = TASKS[name]
    kw = {"save_every": 3}
    full = Trainer(make(tmp_path, **kw), tmp_path / "full", log=_quiet, progress=False)
    snapshots = {}
    original_save = Trainer.save

    def save(self):
        original_save(self)
        if self.step == 6 and self.position > 0:
            shutil.copytree(self.out / "checkpoint", tmp_path / "at6", dirs_exist_ok=True)
            metrics = self.out / "metrics.jsonl"
            snapshots["metrics"] = metrics.read_text() if metrics.exists() else ""

    Trainer.save = save
    try:
        full.fit()
    finally:
        Trainer.save = original_save
    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "at6", crashed / "checkpoint")
    later = (tmp_path / "full" / "metrics.jsonl").read_text()[len(snapshots["metrics"]):]
    (crashed / "metrics.jsonl").write_text(snapshots["metrics"] + later[:200])  # a torn tail
    resumed = _resumed(make(tmp_path, **kw), crashed)
    assert resumed.step == 6
    resumed.fit()
    assert _records(crashed) == _records(tmp_path / "full")
    assert _same_weights(resumed.model, full.model)


def test_periodic_saves_follow_save_every_and_save_minutes(tmp_path, monkeypatch):
    from rnnlab.training import trainer as engine

    saved = []

    def save(self):  # what save() does to the schedule, without writing
        saved.append(self.step)
        self._last_save = engine.time.monotonic()

    monkeypatch.setattr(Trainer, "save", save)
    Trainer(_lm_task(tmp_path, save_every=10, save_minutes=0), tmp_path / "a",
            log=_quiet, progress=False).fit()
    assert saved == [10, 20, 30, 40, 47, 50, 60, 70, 80, 90, 94]  # + each epoch's end
    saved.clear()
    clock = iter(np.arange(0.0, 1e6, 7.0))  # 7 s per call of the clock
    monkeypatch.setattr(engine.time, "monotonic", lambda: float(next(clock)))
    Trainer(_lm_task(tmp_path, save_minutes=1.0), tmp_path / "b", log=_quiet,
            progress=False).fit()
    steps = [s for s in saved if s not in (47, 94)]
    assert steps and all(b - a >= 8 for a, b in zip(steps, steps[1:], strict=False))


def test_without_a_run_directory_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = Trainer(_longdep_task(tmp_path, save_every=5), None, log=_quiet, progress=False)
    trainer.fit()
    assert [r["step"] for r in trainer.history] == [20, 40, 50]
    assert list(tmp_path.iterdir()) == []


def test_a_release_0_1_seq2seq_state_is_read_as_after_its_last_epoch():
    old = {"kind": "seq2seq", "epoch": 3, "rng": {"bit_generator": "PCG64"},
           "train_config": {"batch_size": 16}}
    new = upgrade_state(old, train_pairs=100)
    assert (new["epoch"], new["position"], new["step"]) == (4, 0, 3 * 7)
    assert new["data_rng"] == old["rng"] and "rng" not in new


def test_evaluation_runs_under_no_grad_and_training_does_not(tmp_path):
    """The engine's evaluations keep nothing for backward (rnnlab.nn.no_grad): the task's
    evaluate sees gradients off and the recurrent layer holds no cache after it; the training
    steps around it see them on."""
    task = _lm_task(tmp_path)
    seen = []
    evaluate, step = task.evaluate, task.step

    def watched_evaluate(stop):
        result = evaluate(stop)
        seen.append(("evaluate", is_grad_enabled(), task.model.rnn._cache is None))
        return result

    def watched_step(batch):
        seen.append(("step", is_grad_enabled(), None))
        return step(batch)

    task.evaluate, task.step = watched_evaluate, watched_step
    Trainer(task, None, log=_quiet, progress=False).fit()
    assert ("evaluate", False, True) in seen
    assert {s[1] for s in seen if s[0] == "step"} == {True}
    assert all(s[1:] == (False, True) for s in seen if s[0] == "evaluate")
