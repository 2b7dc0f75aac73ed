"""Checkpoints that survive: a run killed without warning (SIGKILL, as an out-of-memory kill or a
lost machine ends it) resumes from its last periodic checkpoint to exactly the weights and
metrics of a run that was never stopped; and run directories written by release 0.1 (before the
training engine) still load, generate, translate and resume to the numbers that release gave."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnnlab.cli.main import main
from rnnlab.io import load_checkpoint

FIXTURES = Path(__file__).parents[1] / "fixtures" / "release-0.1"
TEXT = "".join(f"line {i}: the quick brown fox {i % 7} jumps over the lazy dog\n"
               for i in range(300))


def _weights_sha256(run: Path) -> str:
    weights, _, _ = load_checkpoint(run / "checkpoint")
    h = hashlib.sha256()
    for k in sorted(weights):
        h.update(k.encode())
        h.update(np.ascontiguousarray(weights[k]).tobytes())
    return h.hexdigest()


def _records(run: Path) -> list[dict]:
    """Every metrics record, without the one field that depends on the clock."""
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(ln).items() if k != "tokens_per_s"} for ln in lines]


def _cli(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rnnlab.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})


def _saved_step(run: Path) -> int:
    """The step of the checkpoint on disk (0 when there is none yet). The JSON is replaced
    atomically, so a read never sees half of it."""
    try:
        return json.loads((run / "checkpoint" / "checkpoint.json").read_text())["step"]
    except FileNotFoundError:
        return 0


def _kill_after_a_periodic_save(args: list[str], run: Path, at_least: int) -> str:
    """Start ``rnnlab ARGS``, SIGKILL it as soon as a checkpoint of step >= ``at_least`` is on
    disk (it gets no chance to save or clean up), and return what it printed."""
    proc = _cli(args)
    deadline = time.monotonic() + 300  # generous for a slow runner; normally under a second
    while proc.poll() is None and time.monotonic() < deadline and _saved_step(run) < at_least:
        time.sleep(0.005)
    alive = proc.poll() is None
    proc.kill()
    output, _ = proc.communicate(timeout=60)
    assert alive, f"the run ended before a checkpoint of step {at_least} appeared:\n{output}"
    assert proc.returncode == -signal.SIGKILL, output
    return output


def _run(args: list[str]) -> None:
    proc = _cli(args)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output


def test_train_lm_killed_after_a_periodic_save_resumes_to_the_same_run(tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    common = ["train", "lm", "--data", str(corpus), "--layers", "1", "--hidden", "48",
              "--embed", "8", "--batch-size", "4", "--bptt", "16", "--epochs", "2",
              "--dropout", "0.3", "--log-every", "3", "--save-every", "5", "--samples", "0",
              "--no-progress"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _run([*common, "--out", str(whole)])
    _kill_after_a_periodic_save([*common, "--out", str(killed)], killed, at_least=10)
    step = _saved_step(killed)
    assert step % 5 == 0 and step < _saved_step(whole)  # a periodic save, mid-run
    _run(["train", "lm", "--out", str(killed), "--resume", "--data", str(corpus),
          "--samples", "0", "--no-progress"])
    assert _records(killed) == _records(whole)
    assert _records(whole)[-1]["final"]
    assert _weights_sha256(killed) == _weights_sha256(whole)


def test_train_seq2seq_killed_after_a_periodic_save_resumes_to_the_same_run(tmp_path):
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdef"), size=rng.integers(1, 7))) for _ in range(3000)]
    data = tmp_path / "reverse.tsv"
    data.write_text("".join(f"{w}\t{w[::-1]}\n" for w in words), encoding="utf-8")
    common = ["train", "seq2seq", "--data", str(data), "--hidden", "48", "--embed", "8",
              "--batch-size", "16", "--epochs", "2", "--attention", "dot", "--log-every", "7",
              "--save-every", "4", "--no-progress"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _run([*common, "--out", str(whole)])
    _kill_after_a_periodic_save([*common, "--out", str(killed)], killed, at_least=8)
    assert _saved_step(killed) % 4 == 0
    _run(["train", "seq2seq", "--out", str(killed), "--resume", "--no-progress"])
    assert _records(killed) == _records(whole)
    assert [r["epoch"] for r in _records(whole) if "test_exact_match" in r] == [1, 2]
    assert _weights_sha256(killed) == _weights_sha256(whole)


# ------------------------------------------------------------------ release 0.1's run directories
# The expected numbers were produced by release 0.1 itself (commit 5a9e511) from these fixtures.
LM_RESUMED_TO_6 = "520ee750171a055762f5c6fd5447596d8e81cd2006e4b637d75f42e1fd9815b2"
SEQ2SEQ_RESUMED_TO_2 = "02aef32063db9c8127a6842e19bd688aabd946b14826cdf64e5c76ae75ac8528"


@pytest.fixture
def old_runs(tmp_path):
    shutil.copytree(FIXTURES, tmp_path / "release-0.1")
    return tmp_path / "release-0.1"


def test_a_release_0_1_language_model_generates_and_evaluates_as_it_did(old_runs, capsys):
    run = str(old_runs / "lm_run")
    assert main(["generate", "--checkpoint", run, "--prompt", "ROMEO:", "--greedy",
                 "--length", "30"]) == 0
    assert capsys.readouterr().out == "ROMEO:ttpzpzpzpzpzpzpzpzpzpzpzpzpzpz\n"
    assert main(["eval", "--checkpoint", run, "--text", str(old_runs / "tiny.txt")]) == 0
    assert "loss 3.5868 nats/token, perplexity 36.12" in capsys.readouterr().out


def test_a_release_0_1_language_model_resumes_to_the_weights_it_gave(old_runs, numpy_kernels):
    run = old_runs / "lm_run"
    assert main(["train", "lm", "--out", str(run), "--resume", "--max-steps", "6", "--data",
                 str(old_runs / "tiny.txt"), "--samples", "0", "--no-progress"]) == 0
    assert _weights_sha256(run) == LM_RESUMED_TO_6
    records = _records(run)  # release 0.1 stopped at step 3 with a closing record: it goes
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6, 6]  # (dropped) and is written anew
    assert records[-1]["final"] and records[-1]["test_ppl"] == pytest.approx(36.009848991229795)


def test_a_release_0_1_seq2seq_translates_and_resumes_as_it_did(old_runs, capsys,
                                                               numpy_kernels):
    run = old_runs / "s2s_run"
    assert main(["translate", "--checkpoint", str(run), "16+75", "1+2"]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == ["0" * 5 + "2" * 45, "0" * 4 + "2" * 46]
    assert main(["train", "seq2seq", "--out", str(run), "--resume", "--epochs", "2",
                 "--no-progress"]) == 0
    assert _weights_sha256(run) == SEQ2SEQ_RESUMED_TO_2
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[1]["loss"] == pytest.approx(2.635299172862698)
