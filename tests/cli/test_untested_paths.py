"""CLI paths no other test runs: the demo, the larger `train lm` presets, `train seq2seq --dedup`.

Each runs in a second or so: a few steps on tiny data, with the sizes shrunk by flags.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from rnnlab.cli.main import main
from rnnlab.tasks.lm.task import load_run


def test_demo_reports_test_mse_and_the_baseline(capsys):
    assert main(["demo", "--steps", "20", "--hidden", "8", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("LSTM(1, 8) + linear readout, 361 parameters")  # 4*8*(1+8+2) + 8+1
    assert re.search(r"^step    1  train mse \d+\.\d{5}", out, re.M), out
    assert "step   20" not in out  # logged at step 1 and every 50th
    m = re.search(r"^test mse (\d+\.\d+)  \(repeat-last-value baseline (\d+\.\d+)\)$", out, re.M)
    assert m, out
    test, baseline = float(m[1]), float(m[2])
    assert math.isfinite(test) and test > 0
    # repeating the last value of sin(f t + phase) + N(0, 0.05^2) errs by E[2 sin^2(f/2)] +
    # 2 * 0.05^2 = 1 - (sin 0.3 - sin 0.1) / 0.2 + 0.005 = 0.0266 for f ~ U(0.1, 0.3)
    assert baseline == pytest.approx(0.0267, abs=0.003)
    gates = re.findall(r"^  t=(\d)  i=([-+]\d\.\d+)  f=([-+]\d\.\d+)  g=([-+]\d\.\d+)  "
                       r"o=([-+]\d\.\d+)  \|c\|=(\d\.\d+)$", out, re.M)
    assert [int(g[0]) for g in gates] == [0, 1, 2, 3, 4], out
    i, f, g, o, c = np.array([row[1:] for row in gates], dtype=float).T
    assert np.all((0 < i) & (i < 1) & (0 < f) & (f < 1) & (0 < o) & (o < 1))  # sigmoids
    assert np.all((-1 < g) & (g < 1)) and np.all(c >= 0)  # tanh, a mean absolute value


@pytest.fixture
def words(tmp_path):
    """A tiny word-level corpus (one sentence a line)."""
    rng = np.random.default_rng(0)
    vocab = "the cat sat on a mat dog ran far away".split()
    path = tmp_path / "words.txt"
    path.write_text("".join(" ".join(rng.choice(vocab, size=8)) + "\n" for _ in range(200)),
                    encoding="utf-8")
    return path


# The published settings each preset must carry (Zaremba et al. 2014 "medium"; Deep Learning
# from Scratch 2, ch. 6 BetterRnnlm), written out here rather than read from PRESETS.
PRESET_SETTINGS = {
    "zaremba-medium": (
        {"dropout": 0.5, "tie_weights": False, "init_range": 0.05, "num_layers": 2},
        {"optimizer": "sgd", "lr": 1.0, "loss": "sum_time", "clip": 5.0, "lr_schedule": "step",
         "lr_decay_start": 6, "lr_decay": pytest.approx(1 / 1.2), "epochs": 39},
    ),
    "dlfs2-rnnlm": (
        {"dropout": 0.5, "tie_weights": True, "init_range": None, "num_layers": 2},
        {"optimizer": "sgd", "lr": 20.0, "loss": "mean", "clip": 0.25, "lr_schedule": "plateau",
         "lr_decay": 0.25, "epochs": 40},
    ),
}


@pytest.mark.parametrize("preset", sorted(PRESET_SETTINGS))
def test_train_lm_preset_runs_one_step_with_its_settings(preset, words, tmp_path, capsys):
    out = tmp_path / "r"
    code = main(["train", "lm", "--preset", preset, "--data", str(words), "--out", str(out),
                 "--max-steps", "1", "--samples", "0", "--no-progress", "--hidden", "8",
                 "--embed", "8", "--batch-size", "2", "--bptt", "3"])
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    model, train = PRESET_SETTINGS[preset]
    assert {k: config["model"][k] for k in model} == model
    assert {k: config["train"][k] for k in train} == train
    # the flags given win over the preset's sizes (650 units, batch 20, 35 steps)
    assert (config["model"]["hidden_size"], config["model"]["embed_size"]) == (8, 8)
    assert (config["train"]["batch_size"], config["train"]["bptt"]) == (2, 3)
    assert config["data"]["level"] == "word"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 1 and records[-1]["lr"] == train["lr"]
    assert math.isfinite(records[-1]["loss"]) and math.isfinite(records[-1]["test_ppl"])
    # a tied decoder has no weight of its own in the checkpoint
    trained, *_ = load_run(out)
    assert ("decoder.weight" in trained.state_dict()) == (not model["tie_weights"])


def test_train_seq2seq_dedup_reports_the_distinct_pairs(tmp_path, capsys):
    distinct = [f"{a}{b}\t{b}{a}" for a in "abcdef" for b in "xyzuv"]  # 30 pairs
    data = tmp_path / "repeated.tsv"
    data.write_text("\n".join(distinct * 3) + "\n", encoding="utf-8")  # each one 3 times
    small = ["--data", str(data), "--epochs", "1", "--hidden", "8", "--embed", "4",
             "--batch-size", "8", "--no-progress"]

    assert main(["train", "seq2seq", "--dedup", "--out", str(tmp_path / "d"), *small]) == 0
    out = capsys.readouterr().out
    assert f"data {data} (90 pairs), 30 distinct: 27 train / 3 test pairs" in out, out
    records = [json.loads(line) for line in (tmp_path / "d" / "metrics.jsonl").open()]
    assert [r["epoch"] for r in records] == [1] and math.isfinite(records[0]["loss"])
    assert (tmp_path / "d" / "checkpoint" / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "d" / "config.json").read_text(encoding="utf-8"))
    assert saved["train"]["dedup"] is True

    # without --dedup every line counts: the repeats are split like distinct pairs
    assert main(["train", "seq2seq", "--out", str(tmp_path / "all"), *small]) == 0
    assert f"data {data} (90 pairs): 81 train / 9 test pairs" in capsys.readouterr().out
