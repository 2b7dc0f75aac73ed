"""``rnnlab train forecast``, ``rnnlab forecast``, ``rnnlab eval forecast`` and
``rnnlab backtest``: parse, call the library, print."""

from __future__ import annotations

import argparse
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from rnnlab.cli.argtypes import (
    UserError,
    add_save_options,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    refuse_existing_run,
    step_or_auto,
    unit_interval,
)

RESUME_OPTIONS = ("epochs", "max_steps", "log_every", "save_every", "save_minutes", "patience")
MODEL_OPTIONS = ("cell", "hidden", "layers", "dropout", "output", "mode", "ar", "members",
                 "beta", "dtype")
TRAIN_OPTIONS = ("window", "valid", "transform", "relative", "seasonal", "calibrate",
                 "batch_size", "lr", "clip", "seed")
READ_OPTIONS = ("time", "target", "covariates", "fill")


def _read(path: str, args: argparse.Namespace, meta=None):
    """Read a CSV with the command line's column options, or the training run's (``meta``: a
    file without the run's columns is refused in those terms)."""
    from rnnlab.data.series import csv_columns, read_series
    from rnnlab.data.text import DataError

    if meta is not None:
        given = [o for o in ("time", "target", "covariates") if getattr(args, o, None)]
        if given:
            raise UserError(f"--{given[0]}: the columns are the training run's (time "
                            f"{meta.time_name!r}, target {meta.target!r}); give only --fill")
        try:
            return read_series(path, meta.time_name, meta.target, meta.covariates,
                               getattr(args, "fill", None) or meta.fill)
        except DataError:
            from rnnlab.tasks.forecast.predict import check_columns

            check_columns(meta, path, csv_columns(path))
            raise
    return read_series(path, args.time, args.target, _split(args.covariates), args.fill)


def _split(text: str | None) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()] if text else []


# ----------------------------------------------------------------------------- train
def _train_forecast(args: argparse.Namespace) -> int:
    from rnnlab.io.checkpoint import load_run_checkpoint
    from rnnlab.tasks.forecast.report import holdout_report
    from rnnlab.tasks.forecast.task import (
        KIND,
        ForecastTask,
        ForecastTrainConfig,
        build_model,
        holdout_rows,
        load_forecaster,
        prepare,
        run_from_checkpoint,
    )
    from rnnlab.training import Trainer

    out = Path(args.out)
    if args.resume:
        given = [k for k in (*MODEL_OPTIONS, *TRAIN_OPTIONS, *READ_OPTIONS, "horizon",
                             "holdout", "season") if getattr(args, k, None) not in (None, [])]
        if given or args.data:
            raise UserError("--resume continues the run with the configuration and data it "
                            "was started with; it takes only "
                            + ", ".join("--" + k.replace("_", "-") for k in RESUME_OPTIONS))
        _, weights, state, arrays = load_run_checkpoint(out, KIND, "rnnlab train forecast")
        run = run_from_checkpoint(weights, state, arrays, best=False)
        opts = {**state["train_config"],
                **{k: getattr(args, k) for k in RESUME_OPTIONS if getattr(args, k) is not None}}
        cfg = ForecastTrainConfig(**opts)
        full = [_read(m.path, args, m) for m in run.series]
        holdouts = [m.holdout for m in run.series]
        prepared = prepare(full, holdouts, cfg, run.series[0].season, run.series[0].fill)
        model, features = run.model, run.features
        model.train()
    else:
        refuse_existing_run(out)
        if not args.data:
            raise UserError("expected --data FILE.csv (one or more files)")
        cfg = ForecastTrainConfig(**{f.name: getattr(args, f.name) for f in fields(
            ForecastTrainConfig) if getattr(args, f.name, None) is not None})
        full = [_read(p, args) for p in args.data]
        holdouts = [holdout_rows(s, args.holdout) for s in full]
        prepared = prepare(full, holdouts, cfg, args.season, args.fill)
        model, features = build_model(prepared, cfg, args.horizon or 1, **{
            k: getattr(args, k) for k in MODEL_OPTIONS if getattr(args, k) is not None})
    for series, p in zip(full, prepared, strict=True):
        print(series.describe())
        for line in series.filled:
            print(f"  {line}")
        print(f"  training rows {p.meta.rows:,}, holdout {p.meta.holdout:,}, season "
              f"{p.meta.season or 'none'}, scaling {p.scaler.transform} (mean {p.scaler.mean:.4g},"
              f" std {p.scaler.std:.4g})")
    task = ForecastTask(model, prepared, features, cfg)
    print(f"model {model.config}")
    print(f"training {cfg}")
    print(f"{sum(p.size for p in model.parameters().values()):,} parameters, {task.windows:,} "
          f"training windows; run directory {out}")
    trainer = Trainer(task, out, progress=not args.no_progress)
    if args.resume:
        trainer.restore(state, weights, arrays)
        print(f"resuming {out} at epoch {trainer.epoch}, step {trainer.step}")
    start = time.perf_counter()
    final = trainer.fit()  # SIGINT / SIGTERM: the step ends, it saves, main exits 130 / 143
    seconds = time.perf_counter() - start
    print(f"trained in {seconds:.1f} s; metrics in {out / 'metrics.jsonl'}")
    if not final.get("final"):
        print(f"{out} has already finished (--epochs N to go on)")
    run = load_forecaster(out)
    print(_calibration_line(run))
    for i, series in enumerate(full):
        if run.series[i].holdout:
            print(holdout_report(run, i, series))
    return 0


def _calibration_line(run) -> str:
    c = run.calibration
    if c is None:
        why = ("--no-calibrate" if not run.train_config.calibrate else "no validation rows")
        return f"intervals: the model's own ({why})"
    return (f"intervals: calibrated on the validation targets, 80% width x {c['80']:.3f}, "
            f"95% width x {c['95']:.3f}")


def _load(args: argparse.Namespace):
    """The run of --checkpoint, without its interval calibration under --no-calibrate."""
    from rnnlab.tasks.forecast.task import load_forecaster

    run = load_forecaster(args.checkpoint)
    if args.no_calibrate:  # a backtest's refits then fit none either
        run.calibration = None
        run.train_config = replace(run.train_config, calibrate=False)
    return run


# ----------------------------------------------------------------------------- forecast
def _forecast(args: argparse.Namespace) -> int:
    from rnnlab.tasks.forecast.predict import check_compatible, forecast_from_end
    from rnnlab.tasks.forecast.report import plot_forecast, write_forecast_csv

    if args.plot:
        from rnnlab.plots import pyplot

        pyplot()  # before the work: a missing matplotlib is said first
    run = _load(args)
    i = run.index(args.series)
    meta = run.series[i]
    if args.data:
        series = _read(args.data, args, meta)
        check_compatible(run, i, series)
    else:
        series = run.history[i]
    horizon = args.horizon or run.model.config.horizon
    result = forecast_from_end(run, i, series, horizon, args.samples, args.seed)
    write_forecast_csv(args.csv, meta.time_name, meta.time_format, result)
    from rnnlab.data.series import format_times

    last = format_times(series.times[-1:], meta.time_format)[0]
    print(f"wrote {horizon} forecast(s) of {meta.target} after {last} to {args.csv}")
    if args.plot:
        actual = _actuals(meta, series, result["time"]) if not args.data else None
        plot_forecast(series, result, args.plot, actual=actual,
                      title=f"{meta.name}: {meta.target}, {horizon}-step forecast")
        print(f"wrote {args.plot}")
    return 0


def _actuals(meta, history, times):
    """The held-out rows of the training file, when it is still there (to plot beside the
    forecast); None when it is not."""
    from rnnlab.data.series import read_series

    try:
        full = read_series(meta.path, meta.time_name, meta.target, meta.covariates, meta.fill)
    except (OSError, ValueError):
        return None
    keep = np.isin(full.times, times)
    return (full.times[keep], full.values[keep]) if keep.any() else None


# ----------------------------------------------------------------------------- eval
def _choose_track_step(run, i: int, series, start: int, horizon: int,
                       args: argparse.Namespace) -> float:
    """``--track auto``: :func:`rnnlab.tasks.forecast.predict.choose_track_step`, printed."""
    from rnnlab.tasks.forecast.predict import choose_track_step

    try:
        gamma, scores, V = choose_track_step(run, i, series, start, horizon, args.samples,
                                             args.seed)
    except ValueError as err:
        raise UserError(f"--track auto: {err}; give a step (e.g. --track 0.1)") from None
    table = ", ".join(f"{g:g}: {sc:.4g}" for g, sc in scores.items())
    print(f"--track auto: interval score (80% + 95%) of each step on the {V} rows before the "
          f"first forecast: {table}; chosen {gamma:g}"
          + (" (no tracking)" if not gamma else ""))
    return gamma


def _eval_forecast(args: argparse.Namespace) -> int:
    from rnnlab.tasks.forecast.predict import check_compatible, rolling
    from rnnlab.tasks.forecast.report import evaluation_report, plot_forecast, write_forecast_csv
    from rnnlab.tasks.forecast.task import holdout_rows

    if args.data is None or args.holdout is None:
        raise UserError("eval forecast takes --checkpoint RUN --data FILE.csv --holdout N "
                        "[--horizon h] [--csv OUT.csv] [--plot OUT.png]")
    if args.plot:
        from rnnlab.plots import pyplot

        pyplot()
    run = _load(args)
    i = run.index(args.series)
    series = _read(args.data, args, run.series[i])
    check_compatible(run, i, series)
    n = holdout_rows(series, args.holdout)
    if n >= len(series):
        raise UserError(f"--holdout {n}: expected fewer rows than the series has "
                        f"({len(series)})")
    horizon = args.horizon or 1
    start = len(series) - n
    result = rolling(run, i, series, start, horizon, args.samples, args.seed)
    gamma = args.track
    if gamma == "auto":
        gamma = _choose_track_step(run, i, series, start, horizon, args)
    if gamma:
        from rnnlab.tasks.forecast.calibrate import tracked

        result = tracked(series.values[start:], result, gamma, lag=horizon)
        print(f"intervals tracked online (step {gamma:g}): each from the misses of the "
              f"targets before its origin")
    print(evaluation_report(run, i, series, start, horizon, result))
    if args.csv:
        write_forecast_csv(args.csv, series.time_name, series.time_format, result,
                           actual=series.values[start:])
        print(f"wrote {args.csv}")
    if args.plot:
        plot_forecast(series.head(start), result, args.plot,
                      actual=(series.times[start:], series.values[start:]),
                      title=f"{run.series[i].name}: {horizon}-step-ahead rolling forecasts")
        print(f"wrote {args.plot}")
    return 0


# ----------------------------------------------------------------------------- backtest
def _backtest(args: argparse.Namespace) -> int:
    from rnnlab.tasks.forecast.report import backtest_report
    from rnnlab.tasks.forecast.task import holdout_rows

    run = _load(args)
    i = run.index(args.series)
    series = _read(args.data, args, run.series[i]) if args.data else None
    if series is None:
        raise UserError("backtest takes --data FILE.csv: the series to backtest over")
    from rnnlab.tasks.forecast.predict import check_compatible

    check_compatible(run, i, series)
    tail = holdout_rows(series, args.holdout)
    if tail >= len(series):
        raise UserError(f"--holdout {tail}: expected fewer rows than the series has "
                        f"({len(series)})")
    horizon = args.horizon or run.model.config.horizon
    print(backtest_report(run, i, series, tail, args.every or horizon, horizon, args.refit,
                          samples=args.samples, seed=args.seed, progress=not args.no_progress))
    return 0


# ----------------------------------------------------------------------------- parsers
def _add_fill(g, help: str) -> None:
    from rnnlab.data.series import FILLS

    g.add_argument("--fill", choices=FILLS, help=help)


def _add_read_options(g) -> None:
    g.add_argument("--time", metavar="COL", help="the time column (default: the first column "
                   "of dates)")
    g.add_argument("--target", metavar="COL", help="the column to forecast (default: the only "
                   "numeric one)")
    g.add_argument("--covariates", metavar="A,B", help="more numeric columns as inputs (their "
                   "past values)")
    _add_fill(g, "gaps in the time column and missing values: 'ffill' or 'interpolate' "
                "fill them, 'none' keeps the rows as they come (trading days); default: "
                "refuse, naming the rows")


def add_forecast_parsers(tsub, sub) -> None:
    """``rnnlab train forecast``, ``rnnlab forecast`` and ``rnnlab backtest``; ``eval forecast``
    is an option of ``eval`` (see :func:`add_eval_forecast_options`)."""
    from rnnlab.models.forecaster import CELLS, MODES, OUTPUTS, ForecasterConfig
    from rnnlab.tasks.forecast.task import ForecastTrainConfig

    m = {f.name: f.default for f in fields(ForecasterConfig)}
    t = ForecastTrainConfig()
    p = tsub.add_parser(
        "forecast", help="an LSTM/GRU forecaster for a time series in a CSV file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a probabilistic forecaster: a recurrent encoder over the last "
        "--window values (scaled on the training rows; with covariates and calendar "
        "features) and a head that gives the next --horizon steps at once, each a Gaussian "
        "(mean, scale) or quantiles, so every forecast has 80% and 95% intervals. The last "
        "--holdout rows are left out; after training the forecast over them is scored beside "
        "the persistence, seasonal naive and drift baselines. The intervals are calibrated on "
        "the validation rows (--calibrate, the default).\n\n"
        "Examples:\n"
        "  rnnlab train forecast --data airline-passengers.csv --holdout 12 --horizon 12 "
        "--transform log --window 13 --seasonal --out runs/airline\n"
        "  rnnlab train forecast --data daily-min-temperatures.csv --fill interpolate "
        "--holdout 365 --window 60 --out runs/temp\n"
        "  rnnlab train forecast --data AAPL.csv AMZN.csv FB.csv GOOG.csv --target Close "
        "--fill none --holdout 2018-01-01 --out runs/stocks   (one global model)\n"
        "  rnnlab forecast --checkpoint runs/airline --horizon 12 --csv f.csv --plot f.png\n"
        "  rnnlab eval forecast --checkpoint runs/temp --data daily-min-temperatures.csv "
        "--fill interpolate --holdout 365 --csv rolling.csv\n"
        "  rnnlab backtest --checkpoint runs/airline --data airline-passengers.csv "
        "--holdout 36 --every 6 --horizon 12 --refit")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly where it stopped")
    g = p.add_argument_group("data")
    g.add_argument("--data", nargs="+", metavar="FILE.csv", help="the series (several files: "
                   "one global model, each series scaled on its own)")
    _add_read_options(g)
    g.add_argument("--holdout", metavar="N|DATE", help="leave out the last N rows, or the rows "
                   "from DATE on (default: none)")
    g.add_argument("--season", type=non_negative_int, help="the seasonal period of the seasonal "
                   "naive baseline and MASE (default: from the frequency, e.g. 12 for monthly)")
    g = p.add_argument_group("model")
    g.add_argument("--horizon", type=positive_int, help="steps forecast at once (default 1)")
    g.add_argument("--window", type=positive_int, help=f"past steps read (default {t.window})")
    g.add_argument("--transform", choices=["none", "log"],
                   help="log for multiplicative series (default none)")
    g.add_argument("--absolute", action="store_false", dest="relative", default=None,
                   help="windows and targets as scaled values, not changes from the window's "
                   "last value")
    g.add_argument("--seasonal", action="store_true", default=None,
                   help="targets relative to the value one season earlier (--season; the "
                   "network learns the deviation from seasonal naive, e.g. a year's growth) "
                   "instead of to the last value; needs --window >= the season")
    g.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=None,
                   help="scale the 80%% and 95%% intervals so that they cover the validation "
                   "targets as often as they say (one width factor per level, fitted on the "
                   "--valid rows with the best validation weights, kept in the checkpoint and "
                   "applied by forecast, eval forecast and backtest; no effect without "
                   "validation rows). Default: on")
    g.add_argument("--cell", choices=tuple(CELLS), help=f"default {m['cell']}")
    g.add_argument("--output", choices=OUTPUTS, help="gaussian (mean and log-scale, NLL "
                   "loss) or quantile (0.025, 0.1, 0.5, 0.9, 0.975; pinball loss); default "
                   f"{m['output']}")
    g.add_argument("--mode", choices=MODES, help="direct (all steps at once) or recursive "
                   "(one step, fed back as sample paths); default direct")
    for name, kind in (("hidden", positive_int), ("layers", positive_int),
                       ("dropout", probability)):
        g.add_argument(f"--{name}", type=kind, help=f"default {m[name]}")
    g.add_argument("--ar", type=non_negative_int, metavar="P", help="a linear autoregressive "
                   "part over the last P values beside the network (LSTNet's highway; 0: off; "
                   "default: the window)")
    g.add_argument("--members", type=positive_int, metavar="K", help="an ensemble of K "
                   "networks trained together, their forecasts averaged (small series: less "
                   f"dependence on one initialisation; K times the work; default {m['members']})")
    g.add_argument("--beta", type=unit_interval, metavar="B", help="gaussian output: weight "
                   "each step's NLL by sigma^(2B), held constant (beta-NLL; 0: the plain NLL, "
                   "1: the mean gets the squared error's gradient, what RMSE rewards, where "
                   "the plain NLL fits the mean least where the spread is largest); default "
                   f"{m['beta']}")
    g.add_argument("--dtype", choices=["float32", "float64"], help=f"default {m['dtype']}")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=positive_int, help=f"default {t.epochs}")
    g.add_argument("--valid", type=non_negative_int, help="validation rows at the end of the "
                   "training part, for early stopping and keeping the best weights (default "
                   "max(horizon, 10%% of the rows); 0: none)")
    g.add_argument("--patience", type=non_negative_int,
                   help=f"epochs without a better validation loss before stopping (default "
                   f"{t.patience}; 0: never)")
    g.add_argument("--batch-size", type=positive_int, dest="batch_size",
                   help=f"windows per step (default {t.batch_size})")
    g.add_argument("--lr", type=positive_float, help=f"Adam learning rate (default {t.lr:g})")
    g.add_argument("--clip", type=non_negative_float, help=f"default {t.clip:g}")
    g.add_argument("--seed", type=non_negative_int, help="default 0")
    g.add_argument("--max-steps", type=non_negative_int, dest="max_steps",
                   help="stop after N steps in all (0: off)")
    g.add_argument("--log-every", type=non_negative_int, dest="log_every",
                   help="steps between metrics records (default 0: one per epoch)")
    add_save_options(g)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train_forecast)

    f = sub.add_parser(
        "forecast", help="forecast the steps after a series with a trained forecaster",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Forecast the --horizon steps that follow the last training row (after "
        "--holdout N, the held-out part), or the end of --data FILE (a longer file with the "
        "same columns). Writes CSV: the time column, forecast, lower_80, upper_80, lower_95, "
        "upper_95.")
    f.add_argument("--checkpoint", required=True, metavar="RUN", help="run directory")
    f.add_argument("--horizon", type=positive_int, help="default: the run's")
    f.add_argument("--csv", required=True, metavar="OUT.csv", help="where to write them")
    f.add_argument("--plot", metavar="OUT.png", help="history, forecast, intervals (and the "
                   "held-out actuals when the training file has them)")
    f.add_argument("--data", metavar="FILE.csv", help="forecast from the end of this file")
    _add_fill(f, "as in training")
    _add_inference_options(f)
    f.set_defaults(func=_forecast)

    b = sub.add_parser(
        "backtest", help="rolling-origin evaluation of a forecaster over a series' tail",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Forecast --horizon steps from origins every --every rows over the last "
        "--holdout rows, each from the actual values before it, and score them (MAE, RMSE, "
        "sMAPE, MASE, pinball, interval coverage) beside the baselines made from the same "
        "origins. --refit trains a new model (the run's configuration) on the rows before "
        "each origin instead of using the trained one.")
    b.add_argument("--checkpoint", required=True, metavar="RUN", help="run directory")
    b.add_argument("--data", required=True, metavar="FILE.csv")
    _add_fill(b, "as in training")
    b.add_argument("--holdout", required=True, metavar="N|DATE", help="the tail to backtest")
    b.add_argument("--every", type=positive_int, help="rows between origins (default: the "
                   "horizon)")
    b.add_argument("--horizon", type=positive_int, help="default: the run's")
    b.add_argument("--refit", action="store_true", help="retrain before each origin")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_inference_options(b)
    b.set_defaults(func=_backtest)


def _add_inference_options(p) -> None:
    p.add_argument("--series", metavar="NAME", help="which series of a global model (a file "
                   "name without .csv)")
    p.add_argument("--samples", type=positive_int, default=1000,
                   help="sample paths of a recursive model (default 1000)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="their seed (default 0)")
    p.add_argument("--no-calibrate", action="store_true", help="the model's own intervals, "
                   "without the run's interval calibration (train forecast --calibrate)")


def add_eval_forecast_options(ev) -> None:
    """The options ``rnnlab eval forecast`` adds to ``rnnlab eval``."""
    g = ev.add_argument_group("forecast")
    g.add_argument("--holdout", metavar="N|DATE", help="forecast: the rows to forecast, each "
                   "from the actual values before it")
    g.add_argument("--horizon", type=positive_int, help="forecast: steps ahead (default 1)")
    g.add_argument("--csv", metavar="OUT.csv", help="forecast: write the forecasts")
    g.add_argument("--track", type=step_or_auto, metavar="GAMMA|auto", help="forecast: let "
                   "the interval widths follow the misses seen so far (online quantile "
                   "tracking: log width += GAMMA (miss - (1 - level)) after each target), for "
                   "series whose volatility changes after training; auto: the step of 0, 0.01, "
                   "0.02, 0.05, 0.1, 0.2, 0.3 with the best interval score on the rows before "
                   "the first forecast (as many as the run's validation rows)")
    _add_fill(g, "forecast: as in training")
    _add_inference_options(g)
