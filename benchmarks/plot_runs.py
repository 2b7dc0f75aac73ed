"""Learning-curve figures for RESULTS.md from finished runs (needs matplotlib).

    .venv/bin/python benchmarks/plot_runs.py longdep runs/longdep/*.json --out benchmarks/figures
    .venv/bin/python benchmarks/plot_runs.py seq2seq runs/s2s/add-* --out benchmarks/figures
    .venv/bin/python benchmarks/plot_runs.py lm runs/ptb runs/ptb2 --out benchmarks/figures

longdep: the ``--json`` files of ``rnnlab bench longdep``; one panel per (task, T), the test
metric against training steps, one line per cell (and init), the constant-predictor baseline
dashed, the "solved" threshold dotted. seq2seq: run directories of ``rnnlab train seq2seq``;
test exact match against epochs, one line per run. lm: run directories of ``rnnlab train lm``;
the training loss of each logged interval and the validation loss of each epoch against
training steps (nats per token, perplexity on the right axis), the learning rate below.
Prints the files it wrote.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from rnnlab.plots import pyplot
from rnnlab.tasks.longdep import SOLVED_ACC, SOLVED_MSE, LongDepConfig

plt = pyplot()
COLORS = {"rnn": "tab:red", "lstm": "tab:blue", "gru": "tab:green"}
SOLVED = {"adding": SOLVED_MSE, "copy": SOLVED_ACC}
HIDDEN = LongDepConfig().hidden  # runs at another size are drawn dashed and labelled


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").open(encoding="utf-8")]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label(run: dict) -> str:
    cfg = run["config"]
    extra = f" H={cfg['hidden']}" if cfg["hidden"] != HIDDEN else ""
    init = f", {run['init']}" if run["cell"] != "rnn" else ""
    return f"{run['cell']}{extra}{init} (seed {cfg['seed']}, {run['params']:,} params)"


def longdep(files: list[Path], out: Path) -> list[Path]:
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for f in files:
        run = json.loads(f.read_text(encoding="utf-8"))
        groups[(run["task"], run["T"])].append(run)
    written = []
    for (task, T), runs in sorted(groups.items()):
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        for run in sorted(runs, key=lambda r: (r["cell"], r["config"]["hidden"])):
            steps = [p[0] for p in run["curve"]]
            metric = [p[2] for p in run["curve"]]
            style = "--" if run["config"]["hidden"] != HIDDEN else "-"
            ax.plot(steps, metric, style, color=COLORS[run["cell"]], label=_label(run), lw=1.4)
        cfg = runs[0]["config"]
        if task == "adding":  # the constant predictor's MSE, on the plotted metric's axis
            ax.axhline(runs[0]["baseline"], color="gray", ls="--", lw=0.8, label="baseline")
        else:  # a memoryless model guesses the recalled symbols: accuracy 1 / symbols
            ax.axhline(1 / cfg["symbols"], color="gray", ls="--", lw=0.8,
                       label="memoryless baseline")
        ax.axhline(SOLVED[task], color="black", ls=":", lw=0.8, label="solved")
        if task == "adding":
            ax.set_yscale("log")
            ax.set_ylabel("test MSE")
        else:
            ax.set_ylabel("test accuracy of the recalled symbols")
        ax.set_xlabel(f"training step (batch {cfg['batch']})")
        ax.set_title(f"{task} problem, T = {T}", fontsize=10)
        ax.legend(fontsize=7)
        written.append(_save(fig, out / f"longdep-{task}-T{T}.png"))
    return written


def seq2seq(dirs: list[Path], out: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for d in dirs:
        records = _records(d)
        ax.plot([r["epoch"] for r in records], [100 * r["test_exact_match"] for r in records],
                marker=".", label=d.name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test exact match (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return [_save(fig, out / f"seq2seq-{dirs[0].name.split('-')[0]}.png")]


PPL_TICKS = [1.5, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 1000, 2000]


def lm(dirs: list[Path], out: Path, name: str | None = None) -> list[Path]:
    fig, (ax, lr_ax) = plt.subplots(2, 1, figsize=(6.4, 4.8), sharex=True,
                                    gridspec_kw={"height_ratios": [3, 1]})
    for k, d in enumerate(dirs):
        records = _records(d)
        color = f"C{k}"
        steps = [r["step"] for r in records]
        ax.plot(steps, [r["loss"] for r in records], color=color, lw=0.7, alpha=0.6,
                label=f"{d.name}: training (each logged interval)")
        ends = [r for r in records if "valid_loss" in r]
        ax.plot([r["step"] for r in ends], [r["valid_loss"] for r in ends], "o-", color=color,
                ms=3, lw=1.4, label=f"{d.name}: validation (each epoch)")
        final = records[-1]
        if "test_loss" in final:
            ax.plot([final["step"]], [final["test_loss"]], "*", color=color, ms=9,
                    label=f"{d.name}: test {final['test_ppl']:.2f} ppl")
        lr_ax.step(steps, [r["lr"] for r in records], where="post", color=color)
    ax.set_ylabel("loss (nats per token)")
    ppl = ax.secondary_yaxis("right", functions=(np.exp, lambda v: np.log(np.maximum(v, 1e-12))))
    low, high = np.exp(ax.get_ylim())
    ppl.set_yticks([v for v in PPL_TICKS if low <= v <= high])
    ppl.set_ylabel("perplexity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    lr_ax.set_yscale("log")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("training step (one window of B streams)")
    lr_ax.grid(alpha=0.3)
    return [_save(fig, out / f"lm-{name or dirs[0].name}.png")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=["longdep", "seq2seq", "lm"])
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("benchmarks/figures"))
    p.add_argument("--name", help="lm: the figure is lm-NAME.png (default: the first run's "
                   "directory name)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.kind == "lm":
        written = lm(args.paths, args.out, args.name)
    else:
        written = (longdep if args.kind == "longdep" else seq2seq)(args.paths, args.out)
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
