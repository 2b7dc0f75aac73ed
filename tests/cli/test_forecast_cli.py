"""`rnnlab train forecast`, `forecast`, `eval forecast` and `backtest` end to end on small
synthetic monthly CSVs: the metrics tables beside the baselines (their numbers checked by hand)
and the verdict, the forecast CSV (header, times in the file's format, ordered interval ends),
resuming to the uninterrupted run, and every bad input as one line and exit status 2."""

from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pytest
from conftest import require_module

from rnnlab.cli.main import main
from rnnlab.data.series import read_series
from rnnlab.io import load_checkpoint
from rnnlab.tasks.forecast.calibrate import choose_gamma, tracked
from rnnlab.tasks.forecast.predict import KEYS, choose_track_step, forecast_from_end, rolling
from rnnlab.tasks.forecast.task import load_forecaster

SMALL = ["--hidden", "8", "--window", "12", "--no-progress"]
VERDICT = re.compile(
    r"^the model (beats persistence by \d+\.\d% in RMSE(, the best baseline here| and the best "
    r"baseline, \w+, by \d+\.\d%|, but not the best baseline, \w+ \(RMSE \S+ vs \S+\))"
    r"|does not beat persistence \(RMSE \S+ vs \S+\): its forecasts carry no skill over "
    r"repeating the last value)$", re.M)


def months(n: int, year: int = 2000) -> list[str]:
    return [f"{year + i // 12}-{i % 12 + 1:02d}" for i in range(n)]


def seasonal(n: int, seed: int = 0) -> np.ndarray:
    """Trend + a 12-month season + noise (the same first values for any n)."""
    t = np.arange(n)
    return 100 + 0.5 * t + 10 * np.sin(2 * np.pi * t / 12) + np.random.default_rng(
        seed).normal(0.0, 1.0, n)


def write_csv(path, values, header="month,sales", times=None, extra=None):
    times = times or months(len(values))
    rows = [f"{t},{v!r}" + ("" if extra is None else f",{float(extra[i])!r}")
            for i, (t, v) in enumerate(zip(times, map(float, values), strict=True))]
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def table(text: str, first: str) -> dict[str, dict[str, float]]:
    """The metrics table that follows the line starting with ``first``: {name: {column: x}}."""
    lines = text[text.index(first):].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("name "))
    cols = lines[start].split()[1:]
    rows = {}
    for ln in lines[start + 2:]:
        cells = re.split(r"\s{2,}", ln.strip())
        if len(cells) != len(cols) + 1:
            break
        rows[cells[0]] = dict(zip(cols, map(float, cells[1:]), strict=True))
    return rows


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def records(out) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(ln).items() if not k.endswith("_per_s")}
            for ln in lines]


def fails(capsys, argv, *words) -> str:
    """``argv`` exits with status 2 and one line on stderr that holds ``words``."""
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.startswith("rnnlab: error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)
    return err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """120 monthly values 2000-01..2009-12, the same file 12 rows longer, and a run trained on
    it with the last 12 rows held out (3 epochs)."""
    root = tmp_path_factory.mktemp("fc")
    path = write_csv(root / "sales.csv", seasonal(120))
    longer = write_csv(root / "longer.csv", seasonal(132))
    run = root / "run"
    assert main(["train", "forecast", "--data", str(path), "--holdout", "12", "--horizon", "12",
                 "--out", str(run), "--epochs", "3", *SMALL]) == 0
    return path, longer, run


# ----------------------------------------------------------------------------- train
def test_train_prints_the_holdout_table_with_the_baselines_and_a_verdict(tmp_path, capsys):
    path = write_csv(tmp_path / "sales.csv", seasonal(120))
    out = tmp_path / "run"
    assert main(["train", "forecast", "--data", str(path), "--holdout", "12", "--horizon", "12",
                 "--out", str(out), "--epochs", "3", *SMALL]) == 0
    text = capsys.readouterr().out
    assert "sales.csv: sales, 120 monthly values 2000-01..2009-12 (no covariates)" in text
    assert "training rows 108, holdout 12, season 12" in text
    assert ("holdout of sales: 12-step forecast of 2009-01 .. 2009-12 (origin: the last "
            "training row)") in text
    rows = table(text, "holdout of sales")
    assert list(rows) == ["LSTM (gaussian)", "persistence", "drift", "seasonal_naive"]
    assert set(rows["persistence"]) == {"MAE", "RMSE", "sMAPE", "MASE", "coverage_80",
                                        "coverage_95", "pinball"}
    v = seasonal(120)
    y = v[108:]
    assert rows["persistence"]["MAE"] == pytest.approx(np.mean(np.abs(y - v[107])), abs=1e-4)
    assert rows["seasonal_naive"]["MAE"] == pytest.approx(np.mean(np.abs(y - v[96:108])),
                                                           abs=1e-4)
    drift = v[107] + np.arange(1, 13) * (v[107] - v[0]) / 107
    assert rows["drift"]["RMSE"] == pytest.approx(np.sqrt(np.mean((y - drift) ** 2)), abs=1e-4)
    assert len(VERDICT.findall(text)) == 1, text
    assert [r["epoch"] for r in records(out)] == [1, 2, 3, 3]
    assert records(out)[-1]["final"] is True


def test_a_model_worse_than_persistence_is_told_so(tmp_path, capsys):
    """A level shift with tiny noise: repeating the last value is almost exact there, and an
    untrained network (one epoch at lr 1e-6) is not."""
    v = np.where(np.arange(120) < 60, 10.0, 20.0) + np.random.default_rng(0).normal(0, .01, 120)
    path = write_csv(tmp_path / "shift.csv", v)
    out = tmp_path / "run"
    assert main(["train", "forecast", "--data", str(path), "--holdout", "12", "--horizon", "12",
                 "--out", str(out), "--epochs", "1", "--lr", "1e-6", *SMALL]) == 0
    text = capsys.readouterr().out
    rows = table(text, "holdout of shift")
    assert rows["LSTM (gaussian)"]["RMSE"] > 5 * rows["persistence"]["RMSE"]
    assert re.search(r"^the model does not beat persistence \(RMSE \S+ vs \S+\): its forecasts "
                     r"carry no skill over repeating the last value$", text, re.M), text
    assert main(["eval", "forecast", "--checkpoint", str(out), "--data", str(path),
                 "--holdout", "12"]) == 0
    assert "the model does not beat persistence" in capsys.readouterr().out


# ----------------------------------------------------------------------------- forecast
def _check_forecast_csv(path, times):
    rows = read_csv(path)
    assert list(rows[0]) == ["month", "forecast", "lower_80", "upper_80", "lower_95",
                             "upper_95"]
    assert [r["month"] for r in rows] == times
    x = np.array([[float(r[k]) for k in ("lower_95", "lower_80", "forecast", "upper_80",
                                         "upper_95")] for r in rows])
    assert np.isfinite(x).all() and (np.diff(x, axis=1) >= 0).all()
    return {k: np.array([float(r[k]) for r in rows]) for k in KEYS}


def test_forecast_writes_the_csv_and_the_plot(data, tmp_path, capsys):
    path, longer, run = data
    out, png = tmp_path / "f.csv", tmp_path / "f.png"
    require_module("matplotlib")
    assert main(["forecast", "--checkpoint", str(run), "--horizon", "12", "--csv", str(out),
                 "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert f"wrote 12 forecast(s) of sales after 2008-12 to {out}" in text  # the last training row
    fc = _check_forecast_csv(out, months(12, 2009))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = load_forecaster(run)
    lib = forecast_from_end(loaded, 0, read_series(path).head(108), 12)
    for k in KEYS:
        np.testing.assert_allclose(fc[k], lib[k], rtol=1e-5)
    # fewer steps: the first ones of the same forecast
    assert main(["forecast", "--checkpoint", str(run), "--horizon", "5", "--csv", str(out)]) == 0
    assert _check_forecast_csv(out, months(5, 2009))["forecast"].tolist() == \
        fc["forecast"][:5].tolist()


def test_forecast_from_the_end_of_a_longer_file(data, tmp_path, capsys):
    _, longer, run = data
    out = tmp_path / "f.csv"
    assert main(["forecast", "--checkpoint", str(run), "--data", str(longer), "--csv",
                 str(out)]) == 0  # the run's horizon by default
    assert "after 2010-12" in capsys.readouterr().out
    fc = _check_forecast_csv(out, months(12, 2011))
    lib = forecast_from_end(load_forecaster(run), 0, read_series(longer), 12)
    np.testing.assert_allclose(fc["forecast"], lib["forecast"], rtol=1e-5)


# ----------------------------------------------------------------------------- eval, backtest
def test_eval_forecast_scores_rolling_forecasts_and_writes_them(data, tmp_path, capsys):
    path, _, run = data
    out = tmp_path / "r.csv"
    assert main(["eval", "forecast", "--checkpoint", str(run), "--data", str(path),
                 "--holdout", "12", "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    assert ("12 rolling 1-step-ahead forecasts of sales, 2009-01 .. 2009-12 (each from the "
            "actual values before it, no refit)") in text
    v = seasonal(120)
    rows = table(text, "rolling")
    assert rows["persistence"]["MAE"] == pytest.approx(np.mean(np.abs(v[108:] - v[107:119])),
                                                       abs=1e-4)
    assert len(VERDICT.findall(text)) == 1
    written = read_csv(out)
    assert list(written[0]) == ["month", *KEYS, "actual"]
    assert [r["month"] for r in written] == months(12, 2009)
    np.testing.assert_allclose([float(r["actual"]) for r in written], v[108:], rtol=1e-5)
    lib = rolling(load_forecaster(run), 0, read_series(path), 108, 1)
    np.testing.assert_allclose([float(r["forecast"]) for r in written], lib["forecast"],
                               rtol=1e-5)
    # a date instead of a number of rows, and 3 steps ahead
    assert main(["eval", "forecast", "--checkpoint", str(run), "--data", str(path),
                 "--holdout", "2009-07", "--horizon", "3"]) == 0
    assert "6 rolling 3-step-ahead forecasts of sales, 2009-07 .. 2009-12" in \
        capsys.readouterr().out
    # widths tracked online: the same forecasts, the intervals of tracked() in the CSV
    assert main(["eval", "forecast", "--checkpoint", str(run), "--data", str(path),
                 "--holdout", "12", "--track", "0.1", "--csv", str(out)]) == 0
    assert "intervals tracked online (step 0.1)" in capsys.readouterr().out
    want = tracked(v[108:], lib, 0.1)
    written = read_csv(out)
    for key in KEYS:
        np.testing.assert_allclose([float(r[key]) for r in written], want[key], rtol=1e-5)
    # --track auto: the step chosen on the validation-length rows before the first forecast
    assert main(["eval", "forecast", "--checkpoint", str(run), "--data", str(path),
                 "--holdout", "12", "--track", "auto", "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    found = re.search(r"--track auto: interval score \(80% \+ 95%\) of each step on the (\d+) "
                      r"rows before the first forecast: .*; chosen ([0-9.]+)", text)
    assert found, text
    V, gamma = int(found[1]), float(found[2])
    tail = rolling(load_forecaster(run), 0, read_series(path).head(108), 108 - V, 1)
    assert gamma == choose_gamma(v[108 - V:108], tail)[0]
    want = tracked(v[108:], lib, gamma) if gamma else lib
    written = read_csv(out)
    for key in KEYS:
        np.testing.assert_allclose([float(r[key]) for r in written], want[key], rtol=1e-5)


def test_track_auto_needs_rows_before_the_first_forecast(data):
    path, _, run = data
    fr = load_forecaster(run)
    start = fr.train_config.window + 5  # 5 rows with a full window of history before them
    with pytest.raises(ValueError, match="expected at least 10 with history before them, got 5"):
        choose_track_step(fr, 0, read_series(path), start)
    gamma, scores, V = choose_track_step(fr, 0, read_series(path), start + 5)
    assert V == 10 and gamma in scores


@pytest.mark.parametrize("refit", [False, True])
def test_backtest_prints_a_table(data, capsys, refit):
    path, _, run = data
    assert main(["backtest", "--checkpoint", str(run), "--data", str(path), "--holdout", "24",
                 "--every", "6", "--no-progress", *(["--refit"] if refit else [])]) == 0
    text = capsys.readouterr().out
    how = "refit before each origin" if refit else "no refit"
    # origins rows 95, 101, 107, 113 (0-based): 12 + 12 + 12 + 6 forecasts
    assert (f"backtest of sales: 4 origins every 6 rows over the last 24, 12 steps each (42 "
            f"forecasts; {how})") in text
    rows = table(text, "backtest of sales")
    assert list(rows) == ["LSTM (gaussian)", "persistence", "drift", "seasonal_naive"]
    v = seasonal(120)
    err = np.concatenate([v[o + 1:o + 13] - v[o] for o in (95, 101, 107, 113)])
    assert rows["persistence"]["MAE"] == pytest.approx(np.mean(np.abs(err)), abs=1e-4)
    assert len(VERDICT.findall(text)) == 1


def test_the_interval_calibration_is_printed_kept_and_can_be_left_out(data, tmp_path, capsys):
    path, _, run = data
    loaded = load_forecaster(run)
    c = loaded.calibration
    assert set(c) == {"80", "95"} and all(v > 0 for v in c.values())
    raw, fixed = tmp_path / "raw.csv", tmp_path / "fixed.csv"
    assert main(["forecast", "--checkpoint", str(run), "--csv", str(fixed)]) == 0
    assert main(["forecast", "--checkpoint", str(run), "--csv", str(raw), "--no-calibrate"]) == 0
    a, b = _check_forecast_csv(fixed, months(12, 2009)), _check_forecast_csv(raw, months(12, 2009))
    np.testing.assert_array_equal(a["forecast"], b["forecast"])
    for level in ("80", "95"):  # the scaled half-widths, in the scaled (z) units
        scaler = loaded.scalers[0]
        m = scaler.scale(a["forecast"])
        np.testing.assert_allclose(scaler.scale(a[f"upper_{level}"]) - m,
                                   c[level] * (scaler.scale(b[f"upper_{level}"]) - m), rtol=1e-4)
    out = tmp_path / "run"
    assert main(["train", "forecast", "--data", str(path), "--holdout", "12", "--horizon", "12",
                 "--out", str(out), "--epochs", "1", "--no-calibrate", *SMALL]) == 0
    assert "intervals: the model's own (--no-calibrate)" in capsys.readouterr().out
    assert load_forecaster(out).calibration is None
    fails(capsys, ["train", "forecast", "--out", str(out), "--resume", "--calibrate"],
          "--resume continues the run with the configuration and data it was started with")


# ----------------------------------------------------------------------------- resume
def test_resume_gives_the_run_that_never_stopped(tmp_path, capsys):
    path = write_csv(tmp_path / "sales.csv", seasonal(96))
    common = ["--data", str(path), "--holdout", "12", "--horizon", "6", "--batch-size", "16",
              "--dropout", "0.1", *SMALL]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert main(["train", "forecast", "--out", str(whole), "--epochs", "4", *common]) == 0
    assert main(["train", "forecast", "--out", str(part), "--epochs", "2", *common]) == 0
    capsys.readouterr()
    assert main(["train", "forecast", "--out", str(part), "--resume", "--epochs", "4",
                 "--no-progress"]) == 0
    assert f"resuming {part} at epoch 3, step" in capsys.readouterr().out
    assert records(part) == records(whole)
    wa, sa, aa = load_checkpoint(whole / "checkpoint")
    wb, sb, ab = load_checkpoint(part / "checkpoint")
    assert wa.keys() == wb.keys() and aa.keys() == ab.keys()
    assert any(k.startswith("best/") for k in aa)  # the best weights are kept too
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    for k in aa:
        np.testing.assert_array_equal(aa[k], ab[k], err_msg=k)
    assert (sa["epoch"], sa["step"], sa["data_rng"]) == (sb["epoch"], sb["step"], sb["data_rng"])
    assert sa["calibration"] is not None and sa["calibration"] == sb["calibration"]


# ----------------------------------------------------------------------------- bad input
def test_bad_files_are_one_line(tmp_path, capsys):
    m = months(40)
    train = ["--epochs", "1", *SMALL]

    def attempt(name, text, *words):
        p = tmp_path / name
        p.write_text(text, encoding="utf-8")
        return fails(capsys, ["train", "forecast", "--data", str(p), "--out",
                              str(tmp_path / f"run-{name}"), *train], *words)

    attempt("notime.csv", "id,y\n" + "".join(f"a{i},{i}\n" for i in range(40)),
            "expected a time column", "name it with --time COL")
    dup = m[:5] + m[4:39]
    attempt("dup.csv", "month,y\n" + "".join(f"{t},{i}\n" for i, t in enumerate(dup)),
            "expected one row per time, got 2000-05 on lines 6 and 7")
    swapped = m[:5] + [m[6], m[5]] + m[7:]
    attempt("unsorted.csv", "month,y\n" + "".join(f"{t},{i}\n" for i, t in enumerate(swapped)),
            "line 8: expected times in increasing order, got 2000-06 after 2000-07 on line 7")
    for cell, words in (("nan", "missing value on line 12"), ("inf", "non-finite value 'inf' "
                        "on line 12"), ("-Infinity", "non-finite value '-Infinity' on line 12"),
                        ("12,5", "expected 2 fields as in the header, got 3"),
                        ("abc", "non-numeric value 'abc' on line 12")):
        vals = [str(i + 1) for i in range(40)]
        vals[10] = cell
        attempt(f"bad-{cell}.csv", "month,y\n" + "".join(f"{t},{x}\n" for t, x in zip(
            m, vals, strict=True)), words)


def test_bad_holdouts_are_one_line(tmp_path, capsys):
    path = write_csv(tmp_path / "s.csv", seasonal(40))
    base = ["train", "forecast", "--data", str(path), "--epochs", "1", *SMALL]
    fails(capsys, [*base, "--out", str(tmp_path / "a"), "--holdout", "40"],
          "--holdout 40 leaves no training rows: the series has 40")
    fails(capsys, [*base, "--out", str(tmp_path / "b"), "--holdout", "2004-01"],
          "--holdout 2004-01: ", "has no rows at or after it (its last is 2003-04)")
    fails(capsys, [*base, "--out", str(tmp_path / "c"), "--holdout", "soon"],
          "--holdout: expected a number of rows or a date such as 2018-01-01, got 'soon'")
    fails(capsys, [*base, "--out", str(tmp_path / "d"), "--holdout", "20", "--window", "30"],
          "use a shorter --window")


def test_log_of_a_non_positive_value_is_one_line(tmp_path, capsys):
    v = seasonal(40)
    v[7] = -1.0
    path = write_csv(tmp_path / "s.csv", v)
    fails(capsys, ["train", "forecast", "--data", str(path), "--transform", "log", "--out",
                   str(tmp_path / "r"), "--epochs", "1", *SMALL],
          "--transform log: expected positive values, got -1 at row 8")


def test_a_constant_series_trains_and_forecasts_the_constant(tmp_path, capsys):
    path = write_csv(tmp_path / "flat.csv", np.full(60, 5.0))
    out = tmp_path / "run"
    assert main(["train", "forecast", "--data", str(path), "--holdout", "6", "--horizon", "6",
                 "--out", str(out), "--epochs", "40", "--hidden", "8", "--window", "6",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "scaling none (mean 5, std 1)" in text  # a constant is scaled by 1
    assert all(np.isfinite(r["loss"]) for r in records(out))
    f = tmp_path / "f.csv"
    assert main(["forecast", "--checkpoint", str(out), "--csv", str(f)]) == 0
    fc = _check_forecast_csv(f, months(60)[54:])
    # nothing to learn but "no change": the network's small leftover, in the series' units
    np.testing.assert_allclose(fc["forecast"], 5.0, atol=0.05)


def test_bad_uses_of_a_checkpoint_are_one_line(data, tmp_path, capsys):
    path, _, shared = data
    run = tmp_path / "run"
    shutil.copytree(shared, run)  # the commands below must fail before they change anything
    f = str(tmp_path / "f.csv")
    fails(capsys, ["forecast", "--checkpoint", str(run), "--horizon", "13", "--csv", f],
          "--horizon: this model forecasts at most 12 steps (it was trained with --horizon "
          "12), got 13")
    other = write_csv(tmp_path / "other.csv", seasonal(40), header="month,units")
    fails(capsys, ["forecast", "--checkpoint", str(run), "--data", str(other), "--csv", f],
          "other.csv: expected the columns of the training data (time 'month', target 'sales', "
          "covariates []), got the columns month, units")
    wider = write_csv(tmp_path / "wider.csv", seasonal(40), header="month,sales,price",
                      extra=list(range(40)))
    assert main(["forecast", "--checkpoint", str(run), "--data", str(wider), "--csv", f]) == 0
    days = [str(np.datetime64("2000-01-01") + i) for i in range(40)]
    daily = write_csv(tmp_path / "daily.csv", seasonal(40), times=days)
    fails(capsys, ["forecast", "--checkpoint", str(run), "--data", str(daily), "--csv", f],
          "frequency M), got time 'month', target 'sales', covariates [], frequency D")
    fails(capsys, ["train", "forecast", "--data", str(path), "--out", str(run), *SMALL],
          "already holds a run: use --resume to continue it, or choose another --out")
    fails(capsys, ["train", "forecast", "--out", str(run), "--resume", "--hidden", "4"],
          "--resume continues the run with the configuration and data it was started with")
    fails(capsys, ["eval", "forecast", "--checkpoint", str(run), "--data", str(path)],
          "eval forecast takes --checkpoint RUN --data FILE.csv --holdout N")
    fails(capsys, ["eval", "forecast", "--checkpoint", str(run), "--data", str(path),
                   "--holdout", "120"], "--holdout 120: expected fewer rows than the series has")
    fails(capsys, ["eval", "--checkpoint", str(run), "--csv", "x.csv"],
          "--csv is an option of 'rnnlab eval forecast'")
    assert records(run) == records(shared)
    assert (run / "checkpoint" / "model.safetensors").read_bytes() == \
        (shared / "checkpoint" / "model.safetensors").read_bytes()


def test_a_global_model_needs_series_to_name_one(tmp_path, capsys):
    a = write_csv(tmp_path / "a.csv", seasonal(40, seed=1))
    b = write_csv(tmp_path / "b.csv", seasonal(40, seed=2) + 50)
    run = tmp_path / "run"
    assert main(["train", "forecast", "--data", str(a), str(b), "--holdout", "6", "--horizon",
                 "3", "--out", str(run), "--epochs", "1", "--hidden", "8", "--window", "6",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "holdout of a:" in text and "holdout of b:" in text
    f = str(tmp_path / "f.csv")
    fails(capsys, ["forecast", "--checkpoint", str(run), "--csv", f],
          "this model was trained on 2 series: choose one with --series {a,b}")
    fails(capsys, ["forecast", "--checkpoint", str(run), "--series", "c", "--csv", f],
          "--series: expected one of a, b, got 'c'")
    assert main(["forecast", "--checkpoint", str(run), "--series", "b", "--csv", f]) == 0
    assert [r["month"] for r in read_csv(f)] == ["2002-11", "2002-12", "2003-01"]
    days = [str(np.datetime64("2000-01-01") + i) for i in range(40)]
    daily = write_csv(tmp_path / "daily.csv", seasonal(40), times=days)
    fails(capsys, ["train", "forecast", "--data", str(a), str(daily), "--out",
                   str(tmp_path / "mixed"), "--epochs", "1", *SMALL],
          "a global model needs series of one frequency with the same covariates")


def test_a_recursive_model_with_covariates_is_refused_before_training(tmp_path, capsys):
    path = write_csv(tmp_path / "c.csv", seasonal(40), header="month,sales,price",
                     extra=list(np.linspace(1, 2, 40)))
    out = tmp_path / "run"
    fails(capsys, ["train", "forecast", "--data", str(path), "--covariates", "price", "--mode",
                   "recursive", "--holdout", "6", "--out", str(out), "--epochs", "1", *SMALL],
          "--mode recursive feeds its own draws back as the next inputs, and the future "
          "values of the covariates are unknown: expected no --covariates, got price")
    assert not (out / "checkpoint").exists()


def test_seasonal_targets_train_and_refuse_a_window_shorter_than_the_season(tmp_path, capsys):
    path = write_csv(tmp_path / "s.csv", seasonal(96))
    out = tmp_path / "run"
    fails(capsys, ["train", "forecast", "--data", str(path), "--seasonal", "--holdout", "12",
                   "--out", str(out), "--epochs", "1", "--hidden", "8", "--window", "6",
                   "--no-progress"],
          "--seasonal: the targets are relative to the value one season earlier, so a window "
          "must hold a season: expected --window >= 12, got 6")
    assert main(["train", "forecast", "--data", str(path), "--seasonal", "--holdout", "12",
                 "--horizon", "12", "--out", str(out), "--epochs", "2", *SMALL]) == 0
    run = load_forecaster(out)
    assert run.features.season == 12 and run.train_config.seasonal
    capsys.readouterr()
    assert main(["forecast", "--checkpoint", str(out), "--csv", str(tmp_path / "f.csv")]) == 0
    _check_forecast_csv(tmp_path / "f.csv", months(12, 2007))
