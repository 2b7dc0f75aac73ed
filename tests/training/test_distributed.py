"""Data-parallel training over MPI: the pieces in one process, then whole runs under
``mpiexec -n 2`` (the mpich wheel of the test extra) against one process with twice the batch.

K ranks with per-rank batch B take the step one process takes with batch K B: the same weights
after N steps (float64 to 1e-10, float32 to 1e-5), also when the ranks' parts hold different
numbers of words (a tagger's sentences). Mismatched ranks fail cleanly on both, a rank that
dies or raises ends the job within seconds, and a resumed run goes on bit-identically.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import _unavailable
from treebank_helpers import write_treebank

from rnnlab.io.safetensors import load_file
from rnnlab.training import distributed
from rnnlab.training.distributed import GradientBuffer, _differences, fingerprint, part

# ----------------------------------------------------------------------------- in one process


def test_part_cuts_a_global_batch_into_contiguous_nearly_equal_parts():
    items = list(range(7))
    parts = [part(items, r, 3) for r in range(3)]
    assert parts == [[0, 1, 2], [3, 4], [5, 6]]
    assert [part(items[:2], r, 3) for r in range(3)] == [[0], [1], []]
    assert part(np.arange(5), 1, 2).tolist() == [3, 4]


def _reduce(buffers, items, grads, rows, losses=(0.0, 0.0)):
    """What two ranks' reduce_step computes, with Allreduce(SUM) done by hand."""
    head = sum(b.head(loss * n, n, r) for b, loss, n, r in zip(buffers, losses, items, rows,
                                                              strict=True))
    count = head[1]
    ns = [b.pack(g, n / count, head) for b, g, n in zip(buffers, grads, items, strict=True)]
    assert ns[0] == ns[1]
    buffers[0].flat[:ns[0]] += buffers[1].flat[:ns[1]]
    return buffers[0].unpack()


def test_the_reduction_weights_gradients_by_items_and_sends_touched_rows_only():
    g1 = {"emb": np.zeros((5, 2)), "w": np.full((2, 3), 2.0)}
    g1["emb"][[1, 3]] = 1.0
    g2 = {"emb": np.zeros((5, 2)), "w": np.full((2, 3), 4.0)}
    g2["emb"][[3, 4]] = 3.0
    rows = ({"emb": np.array([1, 3])}, {"emb": np.array([3, 4])})
    bufs = [GradientBuffer(g, ("emb",)) for g in (g1, g2)]
    grads, union = _reduce(bufs, (1, 3), (g1, g2), rows)
    np.testing.assert_allclose(grads["w"], 0.25 * 2 + 0.75 * 4)
    np.testing.assert_allclose(grads["emb"], 0.25 * g1["emb"] + 0.75 * g2["emb"])
    assert union["emb"].tolist() == [1, 3, 4]
    assert bufs[0].segments["emb"][1] - bufs[0].segments["emb"][0] == 3 * 2  # 3 rows of 2
    # the next step touches other rows: the ones of the last step are zero again
    g1["emb"][:] = 0
    g1["emb"][0] = 5.0
    g2["emb"][:] = 0
    grads, union = _reduce(bufs, (2, 2), (g1, g2), ({"emb": np.array([0])}, {"emb": []}))
    np.testing.assert_allclose(grads["emb"], 0.5 * g1["emb"])
    assert union["emb"].tolist() == [0]
    # a rank whose embedding gradient is dense (weight tying): the whole of it, no rows
    grads, union = _reduce(bufs, (1, 1), (g1, g2), ({"emb": np.array([0])}, {}))
    assert union == {} and grads["emb"].shape == (5, 2)
    np.testing.assert_allclose(grads["emb"], 0.5 * (g1["emb"] + g2["emb"]))
    # an empty part (no items) touches nothing and weighs nothing
    grads, union = _reduce(bufs, (4, 0), (g1, g2), ({"emb": np.array([0])}, {}))
    assert union["emb"].tolist() == [0]
    np.testing.assert_allclose(grads["w"], g1["w"])


def test_configuration_differences_are_named():
    a = {"train": {"batch_size": 4, "lr": 0.1}, "ranks": 2}
    b = {"train": {"batch_size": 5, "lr": 0.1}, "ranks": 2}
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(a) == fingerprint(json.loads(json.dumps(a)))
    assert _differences(b, a) == ["train.batch_size (4 on rank 0, 5 here)"]


def test_single_process_never_imports_mpi4py():
    code = ("import sys; from rnnlab.cli import main; "
            "main(['train', 'lm', '--out', sys.argv[1], '--hidden', '8', '--embed', '4', "
            "'--max-steps', '2', '--samples', '0', '--no-progress', '--bptt', '4']); "
            "assert 'mpi4py' not in sys.modules, 'mpi4py imported'")
    env = {k: v for k, v in os.environ.items() if k not in distributed._SIZE_VARIABLES}
    with_run = subprocess.run([sys.executable, "-c", code, "run"], capture_output=True,
                              text=True, env=env, cwd=_tmp_cwd(), timeout=300)
    assert with_run.returncode == 0, with_run.stderr


def _tmp_cwd() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="rnnlab-dp-")


def test_a_checkpoint_of_two_ranks_is_refused_by_one_process(tmp_path):
    from rnnlab.data.text import load_corpus
    from rnnlab.models.language_model import LanguageModel, LMConfig
    from rnnlab.tasks.lm.task import LMTask, TrainConfig, load_run
    from rnnlab.training import DistributedError, Trainer

    corpus = load_corpus(None, level="char")
    model = LanguageModel(LMConfig(vocab_size=len(corpus.vocab), hidden_size=8, embed_size=4,
                                   num_layers=1), seed=0)
    cfg = TrainConfig(batch_size=2, bptt=4, max_steps=1, save_minutes=0)
    Trainer(LMTask(model, corpus, cfg), tmp_path, log=lambda *_: None, progress=False).fit()
    model, _, state, weights, arrays = load_run(tmp_path)
    state["ranks"] = {"size": 2, "rng": [{}, {}]}
    trainer = Trainer(LMTask(model, corpus, cfg), tmp_path, log=lambda *_: None,
                      progress=False)
    with pytest.raises(DistributedError, match=r"trained with 2 rank\(s\).*mpiexec -n 2"):
        trainer.restore(state, weights, arrays)


def test_a_task_without_sharding_refuses_ranks():
    from rnnlab.training import DistributedError, Task, Trainer

    class Fake:
        rank, size, is_root = 1, 2, False

    class NoShard(Task):
        kind = "toy"

        def __init__(self):
            from rnnlab.nn.layers import Linear

            self.model, self.cfg = Linear(2, 2), None

        def make_optimizer(self):
            from rnnlab.optim import SGD

            return SGD(self.model.parameters(), lr=0.1), None

    with pytest.raises(DistributedError, match="toy task does not support data-parallel"):
        Trainer(NoShard(), None, comm=Fake())


# ----------------------------------------------------------------------------- under mpiexec

def _mpiexec() -> str:
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if found is None:
        _unavailable("mpiexec not found: pip install -e '.[test]' (the mpich wheel)")
    return found


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in distributed._SIZE_VARIABLES}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")
    return env


def _rnnlab(*args: str, ranks: int = 1, timeout: float = 240, cwd=None,
            split: tuple[list[str], list[str]] | None = None) -> subprocess.CompletedProcess:
    """``rnnlab args`` in one process (ranks=1) or under ``mpiexec -n ranks``; ``split``
    gives rank 0 and rank 1 different arguments (MPMD)."""
    py = [sys.executable, "-m", "rnnlab.cli"]
    if split is not None:
        cmd = [_mpiexec(), "-n", "1", *py, *split[0], ":", "-n", "1", *py, *split[1]]
    elif ranks == 1:
        cmd = [*py, *args]
    else:
        cmd = [_mpiexec(), "-n", str(ranks), *py, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout,
                          cwd=cwd)


def _weights(run: Path) -> dict[str, np.ndarray]:
    return load_file(run / "checkpoint" / "model.safetensors")


def _assert_same(a: dict, b: dict, tol: float) -> None:
    assert sorted(a) == sorted(b)
    worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    assert worst <= tol, f"weights differ by {worst:.3g} (tolerance {tol:g})"
    moved = [k for k in a if not np.array_equal(a[k], b[k])]
    assert worst > 0 or not moved  # (identical is fine: nothing to report)


LM = ("train", "lm", "--hidden", "12", "--embed", "6", "--layers", "2", "--bptt", "6",
      "--samples", "0", "--no-progress", "--save-minutes", "0", "--log-every", "2")


def _ok(run: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return run


@pytest.mark.parametrize("dtype,optimizer,tol", [("float64", "sgd", 1e-10),
                                                 ("float64", "adam", 1e-10),
                                                 ("float32", "adam", 1e-5)])
def test_two_ranks_train_the_language_model_one_process_with_twice_the_batch_trains(
        tmp_path, dtype, optimizer, tol):
    opts = (*LM, "--dtype", dtype, "--optimizer", optimizer, "--lr", "0.01", "--max-steps", "7",
            "--clip", "0.5")
    one = _ok(_rnnlab(*opts, "--out", str(tmp_path / "one"), "--batch-size", "6"))
    two = _ok(_rnnlab(*opts, "--out", str(tmp_path / "two"), "--batch-size", "3", ranks=2))
    _assert_same(_weights(tmp_path / "one"), _weights(tmp_path / "two"), tol)
    # the global loss and tokens are logged by rank 0 alone, once
    recs = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").open()]
    base = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").open()]
    assert [r["step"] for r in recs] == [r["step"] for r in base]
    np.testing.assert_allclose([r["loss"] for r in recs], [r["loss"] for r in base],
                               rtol=1e-6 if dtype == "float32" else 1e-12)
    assert two.stdout.count("final: valid ppl") == 1 and one.stdout.count("final:") == 1


def test_two_ranks_train_the_tagger_one_process_with_twice_the_batch_trains(tmp_path):
    data = tmp_path / "ud"
    data.mkdir()
    for split, n, seed in (("train", 45, 0), ("dev", 6, 1), ("test", 6, 2)):
        write_treebank(data / f"toy-ud-{split}.conllu", n, seed)  # 6 to 8 words each
    opts = ("train", "tagger", "--data", str(data), "--max-steps", "5", "--word-dim", "5",
            "--char-dim", "4", "--char-hidden", "3", "--hidden", "6", "--layers", "2",
            "--dropout", "0", "--word-dropout", "0", "--dtype", "float64", "--no-progress",
            "--save-minutes", "0", "--output", "crf")
    _ok(_rnnlab(*opts, "--out", str(tmp_path / "one"), "--batch-size", "10"))
    _ok(_rnnlab(*opts, "--out", str(tmp_path / "two"), "--batch-size", "5", ranks=2))
    _assert_same(_weights(tmp_path / "one"), _weights(tmp_path / "two"), 1e-10)


def test_two_ranks_resume_bit_identically(tmp_path):
    opts = (*LM, "--dtype", "float32", "--dropout", "0.3", "--batch-size", "3")
    _ok(_rnnlab(*opts, "--out", str(tmp_path / "straight"), "--max-steps", "8", ranks=2))
    _ok(_rnnlab(*opts, "--out", str(tmp_path / "stopped"), "--max-steps", "3", ranks=2))
    _ok(_rnnlab(*LM[:2], "--out", str(tmp_path / "stopped"), "--resume", "--max-steps", "8",
                "--no-progress", "--samples", "0", ranks=2))
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "stopped")
    assert all(np.array_equal(a[k], b[k]) for k in a), "the resumed run drifted"
    # under another rank count it is refused, clearly
    again = _rnnlab(*LM[:2], "--out", str(tmp_path / "stopped"), "--resume", "--max-steps",
                    "9", "--no-progress", "--samples", "0")
    assert again.returncode == 2 and "resume it with mpiexec -n 2" in again.stderr


def test_mismatched_ranks_fail_cleanly_on_both(tmp_path):
    base = [*LM, "--max-steps", "3", "--out", str(tmp_path / "run")]
    start = time.monotonic()
    run = _rnnlab(split=(base + ["--batch-size", "3"], base + ["--batch-size", "4"]),
                  timeout=120)
    assert run.returncode == 2, run.stderr[-3000:]
    assert "rank 1: the configuration or data differs from rank 0's in run.train.batch_size " \
           "(3 on rank 0, 4 here)" in run.stderr
    assert "rank 0: the configuration or data of rank(s) [1] differ" in run.stderr
    assert "Traceback" not in run.stderr
    assert time.monotonic() - start < 60


def test_a_rank_that_raises_ends_the_job(tmp_path):
    ok = [*LM, "--max-steps", "3", "--out", str(tmp_path / "run")]
    bad = [*ok, "--data", str(tmp_path / "missing.txt")]
    run = _rnnlab(split=(ok, bad), timeout=120)
    assert run.returncode != 0
    assert "rank 1: " in run.stderr and "missing.txt" in run.stderr


def test_a_killed_rank_ends_the_job_within_seconds(tmp_path):
    cmd = [_mpiexec(), "-n", "2", sys.executable, "-m", "rnnlab.cli", *LM,
           "--max-steps", "1000000", "--out", str(tmp_path / "run")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
                            text=True)
    try:
        metrics = tmp_path / "run" / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not metrics.exists() and time.monotonic() < deadline:  # both are training
            time.sleep(0.2)
        assert metrics.exists(), "the job never started training"
        ranks = [p for p in subprocess.run(["pgrep", "-f", "--", f"--out {tmp_path / 'run'}"],
                                           capture_output=True, text=True).stdout.split()
                 if "rnnlab.cli" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
                 and "mpiexec" not in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
        ranks = [int(p) for p in ranks]
        assert len(ranks) == 2, ranks
        os.kill(max(ranks), 9)
        killed = time.monotonic()
        proc.wait(timeout=30)
        assert time.monotonic() - killed < 10
        assert proc.returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_on_the_launcher_saves_once_on_rank_0_and_the_run_resumes(tmp_path):
    import signal

    run_dir = tmp_path / "run"
    cmd = [_mpiexec(), "-n", "2", sys.executable, "-m", "rnnlab.cli", *LM, "--batch-size", "3",
           "--max-steps", "1000000", "--out", str(run_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "metrics.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err[-3000:]
    assert out.count("interrupted: checkpoint saved") == 1, out[-2000:]
    state = json.loads((run_dir / "checkpoint" / "checkpoint.json").read_text())
    step = state["step"]
    assert state["ranks"]["size"] == 2 and len(state["ranks"]["rng"]) == 2
    _ok(_rnnlab(*LM[:2], "--out", str(run_dir), "--resume", "--max-steps", str(step + 2),
                "--no-progress", "--samples", "0", ranks=2))


def test_two_ranks_train_the_forecaster_one_process_with_twice_the_batch_trains(tmp_path):
    t = np.arange(150)
    y = 10 + np.sin(2 * np.pi * t / 12) * 3 + 0.05 * t
    y += np.random.default_rng(0).normal(0, 0.3, t.size)
    csv = tmp_path / "series.csv"
    csv.write_text("month,value\n" + "".join(
        f"{2000 + i // 12}-{i % 12 + 1:02d},{v:.4f}\n" for i, v in enumerate(y)))
    opts = ("train", "forecast", "--data", str(csv), "--window", "12", "--horizon", "3",
            "--hidden", "6", "--dtype", "float64", "--max-steps", "6", "--no-progress",
            "--save-minutes", "0", "--valid", "12", "--holdout", "12", "--no-calibrate")
    _ok(_rnnlab(*opts, "--out", str(tmp_path / "one"), "--batch-size", "14"))
    _ok(_rnnlab(*opts, "--out", str(tmp_path / "two"), "--batch-size", "7", ranks=2))
    _assert_same(_weights(tmp_path / "one"), _weights(tmp_path / "two"), 1e-10)


def test_two_ranks_train_seq2seq_one_process_with_twice_the_batch_trains(tmp_path):
    opts = ("train", "seq2seq", "--data", "addition", "--size", "400", "--hidden", "8",
            "--embed", "4", "--attention", "dot", "--dtype", "float64", "--max-steps", "4",
            "--no-progress", "--save-minutes", "0")
    _ok(_rnnlab(*opts, "--out", str(tmp_path / "one"), "--batch-size", "16"))
    _ok(_rnnlab(*opts, "--out", str(tmp_path / "two"), "--batch-size", "8", ranks=2))
    _assert_same(_weights(tmp_path / "one"), _weights(tmp_path / "two"), 1e-10)


@pytest.mark.parametrize("task", ["digits", "connected"])
def test_two_ranks_train_speech_one_process_with_twice_the_batch_trains(tmp_path, task):
    from audio_helpers import write_corpus

    corpus = write_corpus(tmp_path / "tones")
    opts = ("train", "speech", "--data", str(corpus), "--task", task, "--hidden", "8",
            "--layers", "1", "--no-progress", "--valid", "0.34", "--max-steps", "3",
            "--dropout", "0", "--dtype", "float64", "--save-minutes", "0", "--utterances",
            "32", "--eval-utterances", "8", "--max-len", "3")
    if task == "digits":
        opts = opts[:-6]
    _ok(_rnnlab(*opts, "--out", str(tmp_path / "one"), "--batch-size", "8"))
    _ok(_rnnlab(*opts, "--out", str(tmp_path / "two"), "--batch-size", "4", ranks=2))
    _assert_same(_weights(tmp_path / "one"), _weights(tmp_path / "two"), 1e-10)
