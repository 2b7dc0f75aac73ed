"""Learning-curve figures for RESULTS.md from finished runs (needs matplotlib).

    .venv/bin/python benchmarks/plot_runs.py longdep runs/longdep/*.json --out benchmarks/figures
    .venv/bin/python benchmarks/plot_runs.py seq2seq runs/s2s/add-* --out benchmarks/figures

longdep: the ``--json`` files of ``rnnlab bench longdep``; one panel per (task, T), the test
metric against training steps, one line per cell (and init), the constant-predictor baseline
dashed, the "solved" threshold dotted. seq2seq: run directories of ``rnnlab train seq2seq``;
test exact match against epochs, one line per run. Prints the files it wrote.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from rnnlab.longdep import SOLVED_ACC, SOLVED_MSE, LongDepConfig
from rnnlab.plots import pyplot

plt = pyplot()
COLORS = {"rnn": "tab:red", "lstm": "tab:blue", "gru": "tab:green"}
SOLVED = {"adding": SOLVED_MSE, "copy": SOLVED_ACC}
HIDDEN = LongDepConfig().hidden  # runs at another size are drawn dashed and labelled


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
        fig.tight_layout()
        path = out / f"longdep-{task}-T{T}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def seq2seq(dirs: list[Path], out: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for d in dirs:
        records = [json.loads(line) for line in (d / "metrics.jsonl").open(encoding="utf-8")]
        ax.plot([r["epoch"] for r in records], [100 * r["test_exact_match"] for r in records],
                marker=".", label=d.name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test exact match (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / f"seq2seq-{dirs[0].name.split('-')[0]}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=["longdep", "seq2seq"])
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("benchmarks/figures"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    fn = longdep if args.kind == "longdep" else seq2seq
    for path in fn(args.paths, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
