"""Spoken digits (the Free Spoken Digit Dataset): rnnlab's recognisers beside the anchors.

    .venv/bin/python benchmarks/speech.py [--only anchors,digits,loso,connected,rtf]
                                          [--runs DIR] [--jobs 2] [--seed 0]

anchors    1-nearest-neighbour and softmax regression on each recording's averaged MFCCs
           (13 coefficients, no deltas, no normalisation), official split (seconds)
digits     rnnlab train speech --task digits, official split: test accuracy, confusion matrix,
           training seconds
loso       leave one speaker out: six runs, each tested on all 500 recordings of the speaker
           it never heard
connected  rnnlab train speech --task connected: digit error rate and whole-string accuracy of
           500 test utterances (joined from test takes only), greedy and prefix beam search
rtf        transcription speed of the trained models: processing seconds / audio seconds

The training runs are the command lines printed beside each result (``--jobs`` of them at once,
one BLAS thread each); their run directories are kept under ``--runs`` and reused when they
have finished, so a second call only prints. Expect about an hour on 2 cores for everything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

from rnnlab.data.features import FeatureConfig, features  # noqa: E402
from rnnlab.tasks.speech.corpus import (  # noqa: E402
    Joining,
    index_recordings,
    joined_set,
    labels_of,
    load_audio,
    split_indices,
)
from rnnlab.tasks.speech.metrics import (  # noqa: E402
    confusion_matrix,
    format_confusion,
    nearest_neighbour_accuracy,
)
from rnnlab.tasks.speech.task import load_speech, recognise  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"
SHOWN = "../shared/data/fsdd"  # how the data directory appears in the printed commands
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


def command(task: str, out: Path, extra: list[str]) -> list[str]:
    return ["rnnlab", "train", "speech", "--data", SHOWN, "--task", task, "--out", str(out),
            *extra]


def train(argv: list[str]) -> dict:
    """Run one training command (unless its run has finished); -> its closing record and
    the seconds it trained."""
    out = Path(argv[argv.index("--out") + 1])
    metrics = out / "metrics.jsonl"
    if not (metrics.exists() and _final(metrics)):
        real = [sys.executable, "-m", "rnnlab.cli", *argv[1:], "--no-progress"]
        real[real.index(SHOWN)] = str(DATA)
        log = out.with_suffix(".log")
        out.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with log.open("w") as f:
            done = subprocess.run(real, stdout=f, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: see {log}")
        (out / "seconds").write_text(f"{time.perf_counter() - start:.1f}\n")
    return {**_final(metrics), "seconds": float((out / "seconds").read_text())}


def _final(path: Path) -> dict | None:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records[-1] if records and records[-1].get("final") else None


# ----------------------------------------------------------------------------- anchors
def anchors(seed: int) -> None:
    recs = index_recordings(DATA)
    classes = labels_of(recs)
    y = np.array([classes.index(r.label) for r in recs])
    train_idx, test_idx = split_indices(recs)
    plain = FeatureConfig(deltas=0, normalize=False)
    start = time.perf_counter()
    X = np.stack([features(x, plain).mean(axis=0) for x in load_audio(recs, plain.rate)])
    nn = nearest_neighbour_accuracy(X[train_idx], y[train_idx], X[test_idx], y[test_idx])
    mu, sd = X[train_idx].mean(0), X[train_idx].std(0)
    Z = (X - mu) / sd
    acc = softmax_regression(Z[train_idx], y[train_idx], Z[test_idx], y[test_idx],
                             len(classes))
    print("\n## Anchors on averaged MFCCs (official split: 2,700 train / 300 test)\n")
    print("| method | test accuracy | issue's number |\n|---|---:|---:|")
    print(f"| 1-nearest-neighbour (Euclidean) | {nn:.2%} | 98.0% |")
    print(f"| softmax regression (L2 1e-3, standardised) | {acc:.2%} | 97.3% |")
    print(f"\n({time.perf_counter() - start:.1f} s; features: {plain})")


def softmax_regression(X, y, Xt, yt, K: int, l2: float = 1e-3) -> float:
    """Multinomial logistic regression fitted by L-BFGS on the mean cross-entropy + l2 |W|^2."""
    n, d = X.shape
    Y = np.eye(K)[y]

    def loss(w):
        W, b = w[:d * K].reshape(d, K), w[d * K:]
        z = X @ W + b
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        nll = -np.mean(np.log(p[np.arange(n), y])) + l2 * np.sum(W * W)
        g = (p - Y) / n
        return nll, np.concatenate([(X.T @ g + 2 * l2 * W).ravel(), g.sum(0)])

    w = minimize(loss, np.zeros(d * K + K), jac=True, method="L-BFGS-B",
                 options={"maxiter": 2000}).x
    pred = (Xt @ w[:d * K].reshape(d, K) + w[d * K:]).argmax(1)
    return float(np.mean(pred == yt))


# ----------------------------------------------------------------------------- model runs
def digits(runs: Path, seed: int) -> None:
    argv = command("digits", runs / f"digits-s{seed}", ["--seed", str(seed)])
    r = train(argv)
    print("\n## Isolated digits, official split\n")
    print(f"    {' '.join(argv)}\n")
    print(f"test accuracy {r['test_acc']:.2%} (target >= 99.0%; 1-nearest-neighbour on "
          f"averaged MFCCs {r['test_nn_baseline']:.2%}), trained in {r['seconds']:.0f} s, "
          f"{r['epoch']} epochs")
    loaded, _, _ = load_speech(runs / f"digits-s{seed}")
    recs = index_recordings(DATA)
    _, test_idx = split_indices(recs)
    test = [recs[i] for i in test_idx]
    audio = load_audio(test, loaded.features.rate)
    feats = [features(x, loaded.features).astype(np.float32) for x in audio]
    pred = [r["labels"][0] for r in recognise(loaded.model, feats)]
    gold = [loaded.classes.index(r.label) for r in test]
    print("\nconfusion (rows: spoken, columns: recognised)\n")
    print("    " + format_confusion(confusion_matrix(gold, pred, 10),
                                     loaded.classes).replace("\n", "\n    "))
    wrong = [f"{t.path.name} -> {loaded.classes[p]}" for t, p, g in zip(test, pred, gold,
                                                                       strict=True) if p != g]
    print(f"\nmisrecognised: {', '.join(wrong) or 'none'}")


def loso(runs: Path, seed: int, jobs: int) -> None:
    argvs = [command("digits", runs / f"loso-{s}-s{seed}", ["--test-speaker", s, "--seed",
                                                             str(seed)]) for s in SPEAKERS]
    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(train, argvs))
    print("\n## Leave one speaker out (train on 5 speakers, test on all 500 of the sixth)\n")
    print(f"    {' '.join(argvs[0])}   (and the other five speakers)\n")
    print("| test speaker | test accuracy | 1-NN averaged MFCCs | epochs | train s |")
    print("|---|---:|---:|---:|---:|")
    for s, r in zip(SPEAKERS, results, strict=True):
        print(f"| {s} | {r['test_acc']:.2%} | {r['test_nn_baseline']:.2%} | {r['epoch']} | "
              f"{r['seconds']:.0f} |")
    mean = np.mean([r["test_acc"] for r in results])
    nn = np.mean([r["test_nn_baseline"] for r in results])
    print(f"| **mean** | **{mean:.2%}** | {nn:.2%} | | |")


def connected(runs: Path, seed: int) -> None:
    argv = command("connected", runs / f"connected-s{seed}", ["--seed", str(seed)])
    r = train(argv)
    print("\n## Connected digits with CTC (500 test utterances of 1-7 digits from test takes)\n")
    print(f"    {' '.join(argv)}\n")
    print("| decoding | digit error rate | strings right |\n|---|---:|---:|")
    print(f"| greedy (best path) | {r['test_greedy_der']:.2%} | "
          f"{r['test_greedy_string_acc']:.2%} |")
    print(f"| prefix beam search | {r['test_beam_der']:.2%} | {r['test_beam_string_acc']:.2%} |")
    print(f"\ntarget: digit error rate <= 3%; trained in {r['seconds']:.0f} s, {r['epoch']} "
          "epochs")


def rtf(runs: Path, seed: int) -> None:
    """Processing time / audio time of transcription (read features + model + decoding), on
    audio already in memory: the 300 test recordings, and 200 joined test utterances."""
    recs = index_recordings(DATA)
    classes = labels_of(recs)
    labels = [classes.index(r.label) for r in recs]
    _, test_idx = split_indices(recs)
    print("\n## Transcription speed (one utterance at a time, 1 thread)\n")
    print("| model | utterances | audio s | processing s | real-time factor |")
    print("|---|---:|---:|---:|---:|")
    for name, beam in (("digits", 0), ("connected", 1), ("connected", 8)):
        run = runs / f"{name}-s{seed}"
        if not (run / "checkpoint").exists():
            continue
        loaded, _, _ = load_speech(run)
        rate = loaded.features.rate
        audio = load_audio(recs, rate)
        if name == "digits":
            clips = [audio[i] for i in test_idx]
        else:
            clips = [x for x, _ in joined_set(audio, test_idx, labels, rate, 200, 2, Joining())]
        start = time.perf_counter()
        for x in clips:
            recognise(loaded.model, [features(x, loaded.features).astype(np.float32)],
                      beam=beam)
        spent = time.perf_counter() - start
        seconds = sum(len(x) for x in clips) / rate
        what = name if name == "digits" else f"{name}, {'greedy' if beam < 2 else 'beam 8'}"
        print(f"| {what} | {len(clips)} | {seconds:.0f} | {spent:.1f} | {spent / seconds:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="anchors,digits,loso,connected,rtf")
    ap.add_argument("--runs", default="runs/speech-bench", help="where the runs are kept")
    ap.add_argument("--jobs", type=int, default=2, help="training runs at once (loso)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: the Free Spoken Digit Dataset is not there")
    runs = Path(args.runs)
    only = args.only.split(",")
    print(f"# rnnlab speech benchmark, {time.strftime('%Y-%m-%d')}, numpy {np.__version__}")
    for name, fn in (("anchors", lambda: anchors(args.seed)),
                     ("digits", lambda: digits(runs, args.seed)),
                     ("loso", lambda: loso(runs, args.seed, args.jobs)),
                     ("connected", lambda: connected(runs, args.seed)),
                     ("rtf", lambda: rtf(runs, args.seed))):
        if name in only:
            fn()
            sys.stdout.flush()


if __name__ == "__main__":
    main()
