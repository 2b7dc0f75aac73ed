"""Forecasting on the training engine: one model for one series, or one global model for several
(each with its own scaling), trained on windows of the past and their next H values.

The rows of each series before ``--holdout`` are the training part. Its last ``valid`` rows
are the validation part: training windows take targets only before it, and after each epoch the
windows whose targets fall inside it are scored (``valid_loss`` per target, ``valid_rmse`` in
the series' units). The weights with the best validation loss are kept. One step:

    loss, n = model.forward_loss(x, y, mask)    summed over the targets that count
    model.backward_loss(1 / n)                   mean per target

With ``calibrate`` (the default), each evaluation also fits the width factors of the 80% and
95% intervals on the validation targets (:mod:`rnnlab.tasks.forecast.calibrate`); the factors
of the best validation model are kept and every forecast applies them.

The checkpoint holds everything a forecast needs: the weights (last and best), the scalers,
the interval calibration, the window features and every series' training rows, so
``rnnlab forecast`` works without the data file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rnnlab.data.series import Series, calendar_size, format_times, season_length
from rnnlab.data.text import DataError
from rnnlab.io.checkpoint import load_run_checkpoint
from rnnlab.models.forecaster import Forecaster, ForecasterConfig, make_forecaster
from rnnlab.optim import Adam, ReduceOnPlateau
from rnnlab.tasks.forecast.calibrate import fit_calibration
from rnnlab.tasks.forecast.windows import (
    TRANSFORMS,
    Features,
    Scaler,
    step_features,
    target_base,
    targets,
)
from rnnlab.tasks.forecast.windows import windows as make_windows
from rnnlab.training import LoopConfig, ShardedBatches, Task, dataclass_from_dict, kept_weights
from rnnlab.training.distributed import digest
from rnnlab.validate import check_non_negative_int, check_positive_int

KIND = "forecaster"


@dataclass
class ForecastTrainConfig(LoopConfig):
    """How to train a forecaster (saved with every checkpoint)."""

    epochs: int = 300
    batch_size: int = 32
    lr: float = 3e-3  # Adam
    clip: float = 1.0
    log_every: int = 0  # one record per epoch
    patience: int = 40  # epochs without a better validation loss before stopping (0: never)
    lr_decay: float = 0.5  # lr x this after lr_patience epochs without a better validation loss
    lr_patience: int = 10
    window: int = 24  # past steps each forecast reads
    valid: int = -1  # validation rows at the end of the training part (-1: max(H, 10%); 0: none)
    transform: str = "none"  # none | log
    relative: bool = True  # windows and targets relative to the window's last value
    seasonal: bool = False  # targets relative to the value one season earlier (seasonal naive)
    calibrate: bool = True  # interval widths fitted on the validation targets (needs valid > 0)
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("batch_size", "window"):
            setattr(self, name, check_positive_int(name, getattr(self, name)))
        if self.valid != -1:
            self.valid = check_non_negative_int("valid", self.valid)
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: expected a positive number, got {self.lr!r}")
        if not (isinstance(self.lr_decay, int | float) and 0 < self.lr_decay <= 1):
            raise ValueError(f"lr_decay: expected a number in (0, 1], got {self.lr_decay!r}")
        self.lr_patience = check_non_negative_int("lr_patience", self.lr_patience)
        for name in ("relative", "seasonal", "calibrate"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected true or false, got {getattr(self, name)!r}")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform: expected one of {', '.join(TRANSFORMS)}, got "
                             f"{self.transform!r}")


@dataclass
class SeriesMeta:
    """What identifies a series and how its file is read (a file to forecast must agree)."""

    name: str
    path: str
    time_name: str
    time_format: str
    target: str
    covariates: list
    freq: str
    season: int | None
    rows: int  # the training rows (before the holdout)
    holdout: int  # rows held out after them (0: none)
    fill: str | None = None  # how the file's gaps and missing values were filled


class Prepared:
    """One series ready for training: its meta, scaler, step features (N, F') and z (N,)."""

    def __init__(self, series: Series, meta: SeriesMeta, scaler: Scaler) -> None:
        self.series, self.meta, self.scaler = series, meta, scaler
        self.z = scaler.scale(series.values, series)
        self.steps: np.ndarray | None = None


def validation_rows(cfg: ForecastTrainConfig, rows: int, horizon: int) -> int:
    if cfg.valid >= 0:
        return cfg.valid
    return max(horizon, round(0.1 * rows))


class ForecastTask(ShardedBatches, Task):
    """A forecaster, its series and its train config, for :class:`rnnlab.training.Trainer`."""

    kind, items = KIND, "targets"
    keep_best = True  # the weights of the best validation loss

    def __init__(self, model: Forecaster, prepared: Sequence[Prepared], features: Features,
                 cfg: ForecastTrainConfig) -> None:
        self.model, self.prepared, self.features, self.cfg = model, list(prepared), features, cfg
        if model.config.mode == "recursive" and features.covariates:
            names = ", ".join(self.prepared[0].meta.covariates)
            raise ValueError("--mode recursive feeds its own draws back as the next inputs, and "
                             "the future values of the covariates are unknown: expected no "
                             f"--covariates, got {names} (or use --mode direct)")
        H, L = model.config.horizon, cfg.window
        if features.season > L:
            raise ValueError(f"--seasonal: the targets are relative to the value one season "
                             f"earlier, so a window must hold a season: expected --window >= "
                             f"{features.season}, got {L}")
        xs, ys, ms, vxs, vys, vms = [], [], [], [], [], []
        self.valid_refs: list[tuple[int, np.ndarray, np.ndarray]] = []
        for i, p in enumerate(self.prepared):
            p.steps = step_features(p.series, p.scaler, features)
            N = len(p.series)
            V = validation_rows(cfg, N, H)
            fit = N - V
            if fit < L + 1:
                raise DataError(f"{p.meta.path}: a window of {L} steps and at least one target "
                                f"need {L + 1} training rows before the {V} validation rows, "
                                f"got {fit} (use a shorter --window, a smaller --valid or "
                                "--holdout)")
            ends = np.arange(L - 1, fit - 1)
            xs.append(make_windows(p.steps, ends, L, features.relative))
            y, m = targets(p.z, ends, H, fit, features.relative, features.season)
            ys.append(y)
            ms.append(m)
            if V:
                vends = np.arange(max(fit - 1, L - 1), N - 1)
                vxs.append(make_windows(p.steps, vends, L, features.relative))
                vy, vm = targets(p.z, vends, H, N, features.relative, features.season)
                vys.append(vy)
                vms.append(vm)
                self.valid_refs.append((i, vends, vm))
        dtype = model.dtype
        self.x = np.concatenate(xs, axis=1).astype(dtype)  # (L, W, F)
        self.y, self.mask = np.concatenate(ys).astype(dtype), np.concatenate(ms)
        self.vx = np.concatenate(vxs, axis=1).astype(dtype) if vxs else None
        self.vy = np.concatenate(vys).astype(dtype) if vys else None
        self.vmask = np.concatenate(vms) if vms else None
        self.calibration: dict | None = None  # the best validation model's interval factors
        self._latest_calibration: dict | None = None  # the last evaluation's
        self.rng = np.random.default_rng([cfg.seed, 1])
        self._epoch_rng = self.rng.bit_generator.state
        self._order = np.arange(self.x.shape[1])

    @property
    def windows(self) -> int:
        return self.x.shape[1]

    def make_optimizer(self):
        opt = Adam(self.model.parameters(), lr=self.cfg.lr)
        if self.cfg.lr_decay < 1 and self.vx is not None:
            return opt, ReduceOnPlateau(opt, self.cfg.lr_decay, self.cfg.lr_patience)
        return opt, None

    def epoch_batches(self, epoch: int, position: int) -> int:
        self._epoch_rng = self.rng.bit_generator.state
        self._order = self.rng.permutation(self.windows)
        return math.ceil(self.windows / self.global_batch_size())

    def data_fingerprint(self) -> str:
        return digest(self.x, self.y, self.mask)

    def batch(self, index: int):
        b = self.global_batch_size()
        idx = self.own_part(self._order[index * b:(index + 1) * b])
        if idx is None:
            return None
        return self.x[:, idx], self.y[idx], self.mask[idx]

    def step(self, batch) -> tuple[float, int]:
        x, y, mask = batch
        n = int(mask.sum())
        loss = self.model.forward_loss(x, y, mask) / n
        if math.isfinite(loss):
            self.model.backward_loss(1.0 / n)
        return loss, n

    def evaluate(self, stop: Callable[[], bool]) -> dict:
        if self.vx is None:
            return {}
        model = self.model
        model.eval()  # the engine puts training mode back
        loss = model.forward_loss(self.vx, self.vy, self.vmask) / int(self.vmask.sum())
        dist = model.distribution(self.vx)
        mean = dist["forecast"]
        if self.cfg.calibrate:
            self._latest_calibration = fit_calibration(self.vy, dist, self.vmask)
        sq, n, start = 0.0, 0, 0
        for i, ends, m in self.valid_refs:  # the errors in each series' own units
            p = self.prepared[i]
            pred = mean[start:start + len(ends)]
            start += len(ends)
            base = target_base(p.z, ends, m.shape[1], self.features)
            idx = np.minimum(ends[:, None] + np.arange(1, m.shape[1] + 1), len(p.z) - 1)
            err = p.scaler.unscale(pred + base) - p.series.values[idx]
            sq += float(np.sum(err[m] ** 2))
            n += int(m.sum())
        return {"valid_loss": float(loss), "valid_rmse": math.sqrt(sq / n)}

    def score(self, metrics: dict) -> float | None:
        return metrics.get("valid_loss")

    def on_best(self) -> None:
        self.calibration = self._latest_calibration  # it belongs to the weights kept

    def final(self, last: dict, step: int, stop: Callable[[], bool]) -> dict | None:
        return self.evaluate(stop) if self.vx is not None else {}

    def describe(self, record: dict, seconds: float) -> str:
        valid = (f", valid loss {record['valid_loss']:.4f}, valid RMSE "
                 f"{record['valid_rmse']:.4g}" if "valid_loss" in record else "")
        if record.get("final"):
            return f"final (best validation model){valid or ': no validation rows'}"
        return f"epoch {record['epoch']}: loss {record['loss']:.4f}{valid} ({seconds:.1f} s)"

    def state_dict(self, in_epoch: bool):
        arrays = {}
        for i, p in enumerate(self.prepared):
            arrays.update(series_arrays(i, p.series))
        return arrays, {
            "model_config": self.model.config.to_dict(),
            "features": asdict(self.features),
            "series": [asdict(p.meta) for p in self.prepared],
            "scalers": [asdict(p.scaler) for p in self.prepared],
            "calibration": self.calibration,
            "rng": self.model.rng_states(),
            "data_rng": self._epoch_rng if in_epoch else self.rng.bit_generator.state,
        }

    def load_state_dict(self, arrays: dict, state: dict) -> None:
        for i, p in enumerate(self.prepared):
            kept = {k: arrays.pop(k) for k in list(arrays) if k.startswith(f"series/{i}/")}
            if not np.array_equal(kept[f"series/{i}/values"], p.series.values):
                raise ValueError(f"{p.meta.path}: the training rows differ from the "
                                 "checkpoint's: resume with the data the run started with")
        self.rng.bit_generator.state = state["data_rng"]
        self.calibration = state.get("calibration")
        self.model.set_rng_states(state["rng"])

    def run_config(self) -> dict:
        return {"model": self.model.config.to_dict(), "train": asdict(self.cfg),
                "features": asdict(self.features),
                "series": [asdict(p.meta) for p in self.prepared]}


def series_arrays(i: int, series: Series) -> dict[str, np.ndarray]:
    return {f"series/{i}/times": series.times.astype("datetime64[s]").astype(np.int64),
            f"series/{i}/values": series.values,
            f"series/{i}/covariates": series.covariates}


# ----------------------------------------------------------------------------- building
def holdout_rows(series: Series, holdout: int | str | None) -> int:
    """``--holdout``: N rows (an int or its digits) or a date (the rows at or after it); None
    is none."""
    if holdout is None:
        return 0
    if isinstance(holdout, int) or holdout.isdigit():
        return int(holdout)
    try:
        when = np.datetime64(holdout, "s")
    except ValueError:
        raise DataError(f"--holdout: expected a number of rows or a date such as 2018-01-01, "
                        f"got {holdout!r}") from None
    rows = int(np.sum(series.times >= when))
    if rows == 0:
        last = format_times(series.times[-1:], series.time_format)[0]
        raise DataError(f"--holdout {holdout}: {series.path} has no rows at or after it (its "
                        f"last is {last})")
    return rows



def prepare(series_list: Sequence[Series], holdouts: Sequence[int], cfg: ForecastTrainConfig,
            season: int | None = None, fill: str | None = None) -> list[Prepared]:
    """Cut each series' holdout, fit its scaler on what is left, and check they agree."""
    first = series_list[0]
    prepared, names = [], set()
    for series, holdout in zip(series_list, holdouts, strict=True):
        if series.freq != first.freq or series.covariate_names != first.covariate_names:
            raise DataError(f"{series.path}: a global model needs series of one frequency with "
                            f"the same covariates: expected {first.freq} {first.covariate_names}"
                            f" (as {first.path}), got {series.freq} {series.covariate_names}")
        if holdout >= len(series):
            raise DataError(f"{series.path}: --holdout {holdout} leaves no training rows: the "
                            f"series has {len(series)}")
        train = series.head(len(series) - holdout)
        name = Path(series.path).stem
        while name in names:
            name += "'"
        names.add(name)
        meta = SeriesMeta(name, str(series.path), series.time_name, series.time_format,
                          series.target_name, list(series.covariate_names), series.freq,
                          season if season is not None else season_length(series.freq),
                          len(train), holdout, fill)
        prepared.append(Prepared(train, meta, Scaler.fit(train, cfg.transform)))
    return prepared


def build_model(prepared: Sequence[Prepared], cfg: ForecastTrainConfig, horizon: int,
                **model_options) -> tuple[Forecaster, Features]:
    first = prepared[0].series
    features = Features(first.freq, first.covariates.shape[1], calendar_size(first.freq),
                        cfg.relative, seasonal_base(prepared, cfg))
    config = ForecasterConfig(features.size, horizon, **model_options)
    return make_forecaster(config, seed=cfg.seed), features


def seasonal_base(prepared: Sequence[Prepared], cfg: ForecastTrainConfig) -> int:
    """The season the targets are relative to with ``cfg.seasonal`` (0 without)."""
    if not cfg.seasonal:
        return 0
    if not cfg.relative:
        raise ValueError("--seasonal makes the targets relative to the value one season "
                         "earlier: expected relative windows, got --absolute")
    season = prepared[0].meta.season  # one frequency, one --season: every series' is this
    if not season or season < 2:
        raise ValueError(f"--seasonal: expected a season of at least 2 steps (from the "
                         f"frequency or --season N), got {season or 'none'} for "
                         f"{prepared[0].meta.freq} data")
    return season


# ----------------------------------------------------------------------------- loading
@dataclass
class ForecastRun:
    """A trained forecaster as loaded for inference."""

    model: Forecaster
    features: Features
    series: list  # [SeriesMeta]
    scalers: list  # [Scaler]
    history: list  # [Series]: each series' training rows
    train_config: ForecastTrainConfig
    calibration: dict | None = None  # {"80": c, "95": c}: interval width factors (None: off)

    @classmethod
    def from_task(cls, task: ForecastTask) -> ForecastRun:
        """The run a trained task makes (its model in eval mode), without a checkpoint."""
        p = task.prepared
        return cls(task.model.eval(), task.features, [x.meta for x in p],
                   [x.scaler for x in p], [x.series for x in p], task.cfg, task.calibration)

    def index(self, name: str | None) -> int:
        """The series called ``name`` (a file stem), or the only one."""
        names = [m.name for m in self.series]
        if name is None:
            if len(names) == 1:
                return 0
            raise DataError(f"this model was trained on {len(names)} series: choose one with "
                            f"--series {{{','.join(names)}}}")
        if name not in names:
            raise DataError(f"--series: expected one of {', '.join(names)}, got {name!r}")
        return names.index(name)


def load_forecaster(path: str | Path, best: bool = True) -> ForecastRun:
    """A run directory (or its ``checkpoint/``) -> :class:`ForecastRun` (the model in eval mode,
    with the best validation weights when ``best`` and they exist)."""
    _, weights, state, arrays = load_run_checkpoint(path, KIND, "rnnlab train forecast")
    return run_from_checkpoint(weights, state, arrays, best)


def run_from_checkpoint(weights: dict, state: dict, arrays: dict, best: bool = True
                        ) -> ForecastRun:
    """:func:`load_forecaster` from a checkpoint already read (the interval calibration
    belongs to the best weights: none with the last ones)."""
    config = dataclass_from_dict(ForecasterConfig, state["model_config"])
    model = make_forecaster(config, seed=0)
    model.load_state_dict(kept_weights(weights, arrays, best))
    model.eval()
    metas = [SeriesMeta(**m) for m in state["series"]]
    history = [_history_series(i, m, arrays) for i, m in enumerate(metas)]
    return ForecastRun(model, Features(**state["features"]), metas,
                       [Scaler(**s) for s in state["scalers"]], history,
                       dataclass_from_dict(ForecastTrainConfig, state["train_config"]),
                       state.get("calibration") if best else None)


def _history_series(i: int, meta: SeriesMeta, arrays: dict) -> Series:
    times = arrays[f"series/{i}/times"].astype("datetime64[s]")
    return Series(meta.path, meta.time_name, meta.time_format, times, meta.freq, meta.target,
                  arrays[f"series/{i}/values"], list(meta.covariates),
                  arrays[f"series/{i}/covariates"].reshape(len(times), len(meta.covariates)),
                  [])
