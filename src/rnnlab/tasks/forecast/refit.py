"""Training a forecaster without a run directory: the backtest's refits (a new model with a
trained run's configuration, on the rows before each origin)."""

from __future__ import annotations

from dataclasses import replace

from rnnlab.data.series import Series
from rnnlab.tasks.forecast.task import ForecastRun, ForecastTask, prepare
from rnnlab.training import Trainer


def refit_run(run: ForecastRun, i: int, series: Series) -> ForecastRun:
    """A new model, trained like ``run`` (its model and train configs, series ``i``'s season
    and fill) on ``series`` alone; returned as a one-series run in eval mode."""
    from rnnlab.models.forecaster import make_forecaster

    meta = run.series[i]
    cfg = replace(run.train_config)
    prepared = prepare([series], [0], cfg, meta.season, meta.fill)
    model = make_forecaster(run.model.config, seed=cfg.seed)
    task = ForecastTask(model, prepared, run.features, cfg)
    Trainer(task, None, log=lambda _: None, progress=False).fit()  # ends on the kept weights
    return ForecastRun.from_task(task)
