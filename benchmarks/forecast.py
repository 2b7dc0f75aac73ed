"""Forecasting on real series: rnnlab's LSTM forecaster beside the naive baselines and the
statistical anchors (statsmodels, from ``forecast_anchors.py``), in one table.

    .venv/bin/python benchmarks/forecast.py [--seeds 3] [--only airline12,temp] [--json FILE]

Each setup trains the forecaster once per seed (the same configuration a user gets from the
command line printed beside it), on the rows before the test part, and scores it as the issue
asks: airline, one 12- (24-) step forecast from the origin; Melbourne temperatures, sunspots and
the four stocks, rolling one-step forecasts of every test row from the actual values before it
(no refit). The stocks are one global model over the four series. Reported: the RMSE of each
seed, their mean, the ratio to persistence, the coverage of the 80% and 95% intervals (mean over
seeds; calibrated on the validation tail, and in brackets the model's own, ``--no-calibrate``),
for the rolling setups also the coverage of intervals tracked online (``eval forecast --track``;
``--track auto``, the default here, chooses the step per series and seed on the rows before
the test part, and the table shows the steps chosen) and the training seconds per run.
``--jobs`` processes run at once (default 2, one per core): expect minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from dataclasses import replace
from multiprocessing import Pool
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # two training processes on two cores
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from rnnlab.cli.argtypes import step_or_auto  # noqa: E402
from rnnlab.data.series import read_series  # noqa: E402
from rnnlab.tasks.forecast import metrics  # noqa: E402
from rnnlab.tasks.forecast.calibrate import tracked  # noqa: E402
from rnnlab.tasks.forecast.predict import (  # noqa: E402
    choose_track_step,
    forecast_from_end,
    rolling,
)
from rnnlab.tasks.forecast.task import (  # noqa: E402
    ForecastRun,
    ForecastTask,
    ForecastTrainConfig,
    build_model,
    holdout_rows,
    prepare,
)
from rnnlab.training import Trainer  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TS, STOCKS = "timeseries/", "gafa-stock/"
TRACK = "auto"  # the online tracking step reported beside the rolling setups (--track)
TICKERS = ("AAPL", "AMZN", "FB", "GOOG")

# name -> files, read options, holdout, horizon, protocol, train options, target RMSE
SETUPS = {
    # --seasonal and each airline setup's lr and members chosen by the validation RMSE over
    # seeds 0-5 (benchmarks/RESULTS.md, section 9)
    "airline12": dict(files=[TS + "airline-passengers.csv"], fill=None, holdout=12, horizon=12,
                      protocol="origin", train=dict(transform="log", window=13, seasonal=True,
                                                    lr=3e-4),
                      model=dict(members=10), target=15.8),
    "airline24": dict(files=[TS + "airline-passengers.csv"], fill=None, holdout=24, horizon=24,
                      protocol="origin", train=dict(transform="log", window=13, seasonal=True),
                      model=dict(members=5), target=32.5),
    "temp": dict(files=[TS + "daily-min-temperatures.csv"], fill="interpolate", holdout=365,
                 horizon=1, protocol="rolling", train=dict(window=30), target=2.25),
    # validation rows as many as the test rows (the default 10%, 226 rows, is one quiet cycle)
    "sunspots": dict(files=[TS + "monthly-sunspots.csv"], fill=None, holdout=564, horizon=1,
                     protocol="rolling", train=dict(window=30, valid=564), target=18.0),
    "stocks": dict(files=[f"{STOCKS}{t}.csv" for t in TICKERS], target_col="Close", fill="none",
                   holdout="2018-01-01", horizon=1, protocol="rolling",
                   train=dict(window=20, transform="log"),
                   target=None),
}


def command(name: str) -> str:
    """The command line that trains the same model."""
    s = SETUPS[name]
    files = " ".join(f"../shared/data/{f}" for f in s["files"])
    opts = [f"--holdout {s['holdout']}", f"--horizon {s['horizon']}"]
    if s.get("target_col"):
        opts.append(f"--target {s['target_col']}")
    if s["fill"]:
        opts.append(f"--fill {s['fill']}")
    opts += [f"--{k}" if v is True else f"--{k} {v:g}" if isinstance(v, float) else f"--{k} {v}"
             for k, v in {**s["train"], **s.get("model", {})}.items()]
    return f"rnnlab train forecast --data {files} {' '.join(opts)} --out runs/{name}"


def run(job: tuple[str, int, float | str]) -> dict:
    """Train one setup with one seed; -> per-series (y, model forecast, baselines, train).
    ``track``: the step of the tracked intervals beside rolling forecasts, or "auto" (chosen
    per series on the rows before the holdout, as ``eval forecast --track auto``)."""
    name, seed, track = job
    s = SETUPS[name]
    full = [read_series(DATA / f, target=s.get("target_col"), fill=s["fill"]) for f in s["files"]]
    holdouts = [holdout_rows(x, s["holdout"]) for x in full]
    cfg = ForecastTrainConfig(seed=seed, **s["train"])
    prepared = prepare(full, holdouts, cfg, None, s["fill"])
    model, features = build_model(prepared, cfg, s["horizon"], **s.get("model", {}))
    task = ForecastTask(model, prepared, features, cfg)
    start = time.perf_counter()
    Trainer(task, None, log=lambda _: None, progress=False).fit()
    seconds = time.perf_counter() - start
    fr = ForecastRun.from_task(task)
    raw = replace(fr, calibration=None)
    out = []
    for i, (series, n) in enumerate(zip(full, holdouts, strict=True)):
        cut = len(series) - n
        if s["protocol"] == "origin":
            fc, fc_raw = (forecast_from_end(r, i, series.head(cut), s["horizon"])
                          for r in (fr, raw))
            y = series.values[cut:cut + s["horizon"]]
            fc_tracked, step = None, None  # one forecast from one origin: no misses to follow
        else:
            fc, fc_raw = (rolling(r, i, series, cut, 1) for r in (fr, raw))
            y = series.values[cut:]
            step = choose_track_step(fr, i, series, cut, 1)[0] if track == "auto" else track
            fc_tracked = tracked(y, fc, step) if step else fc  # eval forecast --track
        out.append({"series": prepared[i].meta.name, "y": y, "fc": fc, "fc_raw": fc_raw,
                    "fc_tracked": fc_tracked, "track_step": step,
                    "train": series.values[:cut]})
    return {"name": name, "seed": seed, "seconds": seconds, "series": out,
            "calibration": fr.calibration}


def summarise(name: str, runs: list[dict]) -> list[dict]:
    """One row per series: the model's RMSE per seed, mean, coverage, ratio to persistence."""
    rows = []
    for k, first in enumerate(runs[0]["series"]):
        y, train = first["y"], first["train"]
        if SETUPS[name]["protocol"] == "origin":
            base = metrics.persistence(train, len(y))
        else:
            full = np.concatenate([train, y])
            base = metrics.rolling_one_step(full, len(train), "persistence")
        naive = metrics.rmse(y, base["forecast"])
        rmses = [metrics.rmse(y, r["series"][k]["fc"]["forecast"]) for r in runs]
        cov = {f"{lvl}{raw}": float(np.mean([
            metrics.coverage(y, r["series"][k][key][f"lower_{lvl}"],
                             r["series"][k][key][f"upper_{lvl}"]) for r in runs]))
            for lvl in ("80", "95") for raw, key in (("", "fc"), ("_raw", "fc_raw"))}
        for lvl in ("80", "95"):
            cov[f"{lvl}_tracked"] = float(np.mean([
                metrics.coverage(y, r["series"][k]["fc_tracked"][f"lower_{lvl}"],
                                 r["series"][k]["fc_tracked"][f"upper_{lvl}"]) for r in runs])
            ) if first["fc_tracked"] is not None else None
        factors = [r["calibration"] or {"80": 1.0, "95": 1.0} for r in runs]
        rows.append({"setup": name, "series": first["series"], "rmse_seeds": rmses,
                     "rmse_mean": float(np.mean(rmses)), "persistence": naive,
                     "ratio_to_persistence": float(np.mean(rmses)) / naive,
                     "coverage_80": cov["80"], "coverage_95": cov["95"],
                     "coverage_80_raw": cov["80_raw"], "coverage_95_raw": cov["95_raw"],
                     "coverage_80_tracked": cov["80_tracked"],
                     "coverage_95_tracked": cov["95_tracked"],
                     "track_steps": [r["series"][k]["track_step"] for r in runs],
                     "calibration": factors,
                     "seconds": float(np.mean([r["seconds"] for r in runs])),
                     "target": SETUPS[name]["target"], "command": command(name)})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| setup | series | persistence | rnnlab RMSE (mean; seeds) | / persistence | "
             "target | cov 80 (raw) | cov 95 (raw) | cov 80 / 95 tracked (steps) | train s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        seeds = ", ".join(f"{v:.2f}" for v in r["rmse_seeds"])
        target = "" if r["target"] is None else f"<= {r['target']}"
        tracked_cov = ("" if r["coverage_80_tracked"] is None else
                       f"{r['coverage_80_tracked']:.2f} / {r['coverage_95_tracked']:.2f} ("
                       + ", ".join(f"{g:g}" for g in r["track_steps"]) + ")")
        lines.append(f"| {r['setup']} | {r['series']} | {r['persistence']:.3f} | "
                     f"{r['rmse_mean']:.3f} ({seeds}) | {r['ratio_to_persistence']:.3f} | "
                     f"{target} | {r['coverage_80']:.2f} ({r['coverage_80_raw']:.2f}) | "
                     f"{r['coverage_95']:.2f} ({r['coverage_95_raw']:.2f}) | {tracked_cov} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def anchors() -> str:
    """The statistical anchors' table (forecast_anchors.py, beside this script)."""
    import forecast_anchors as fa

    warnings.filterwarnings("ignore")
    setups = [fa.airline(12), fa.airline(24), *fa.melbourne(), fa.sunspots(),
              *(fa.stock(t) for t in TICKERS)]
    recs, _ = fa.records(setups)
    return fa.markdown(recs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="training runs per setup")
    parser.add_argument("--only", help="comma-separated setups (default: all): "
                        + ", ".join(SETUPS))
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON here")
    parser.add_argument("--no-anchors", action="store_true", help="skip statsmodels")
    parser.add_argument("--jobs", type=int, default=2, help="training processes at once")
    parser.add_argument("--track", default=TRACK, type=step_or_auto,
                        help="the tracking step of the rolling setups' tracked intervals, or "
                        "auto: chosen per series and seed on the rows before the holdout "
                        "(default auto)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(SETUPS)
    jobs = [(n, seed, args.track) for n in names for seed in range(args.seeds)]
    if args.jobs > 1:
        with Pool(args.jobs) as pool:
            results = pool.map(run, jobs)
    else:
        results = [run(job) for job in jobs]
    rows = []
    for n in names:
        rows += summarise(n, [r for r in results if r["name"] == n])
    print(markdown(rows))
    print()
    for n in names:
        factors = next(r["calibration"] for r in rows if r["setup"] == n)
        print(f"- {n} calibration (80, 95) per seed: "
              + "; ".join(f"{f['80']:.2f}, {f['95']:.2f}" for f in factors))
    print()
    for n in names:
        print(f"- {n}: {command(n)}")
    if not args.no_anchors:
        print()
        print(anchors())
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
