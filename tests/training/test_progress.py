"""The training progress bar: tqdm on stderr when installed, a throttled plain line otherwise."""

from __future__ import annotations

import sys
from types import SimpleNamespace

from conftest import require_module

from rnnlab.training import progress
from rnnlab.training.progress import Progress


def _run(total: int, losses: list[str], **kw) -> Progress:
    with Progress(total, "epoch 1", **kw) as bar:
        for loss in losses:
            bar.update(loss=loss)
    return bar


def test_tqdm_bar_on_stderr_shows_count_and_postfix(capsys):
    require_module("tqdm")
    bar = _run(3, ["1.5", "1.0", "0.5"])
    out, err = capsys.readouterr()
    assert out == "" and bar.n == 3
    final = err.replace("\r", "\n").strip().splitlines()[-1]  # the bar as close() left it
    assert final.startswith("epoch 1: 100%"), err
    assert "3/3" in final and final.endswith("loss=0.5]"), err


def test_without_tqdm_prints_a_throttled_line_to_stderr(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # `from tqdm import tqdm` raises ImportError
    ticks = iter([100.0, 101.0, 103.0, 103.5])  # seconds at each update
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: next(ticks)))
    bar = _run(4, ["1.5", "1.0", "0.75", "0.5"])
    out, err = capsys.readouterr()
    assert out == "" and bar.n == 4
    # the 2nd update came 1 s after the 1st (under 2 s: silent); the 3rd 3 s after it; the last
    # always prints
    assert err.splitlines() == ["epoch 1 1/4 loss=1.5", "epoch 1 3/4 loss=0.75",
                                "epoch 1 4/4 loss=0.5"]


def test_disabled_prints_nothing_but_counts(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    bar = _run(2, ["1.0", "0.5"], enabled=False, initial=5)
    assert capsys.readouterr() == ("", "") and bar.n == 7
