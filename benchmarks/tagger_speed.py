"""Tagging speed: sentences/s of rnnlab's tagger vs the same architecture in torch.nn.

The model of ``rnnlab train tagger`` (word embedding, a character BiLSTM over each distinct
spelling of a batch, a 2-layer BiLSTM over the sentence, UPOS and XPOS softmax heads, argmax)
tags the same sentences on both sides: EWT's dev file when ../shared/data is present (else
random sentences of EWT-like lengths), batches of 256 sentences of similar length, float32,
inference only (torch under ``no_grad``, packed sequences). Each side runs in its own process,
the two alternate, and the medians over rounds are reported. Weights are random: speed does
not depend on them.

    .venv/bin/python benchmarks/tagger_speed.py [--rounds 3] [--threads 2] [--batch 256]

The last line is the ratio rnnlab/torch in sentences/s (above 1: rnnlab is faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import zlib
from pathlib import Path

from worker import run_worker  # benchmarks/worker.py, beside this script

DEV = (Path(__file__).resolve().parents[2] / "shared" / "data" / "ud-english-ewt"
       / "en_ewt-ud-dev.conllu")
SIZES = {"words": 10000, "chars": 100, "upos": 18, "xpos": 51, "word_dim": 100, "char_dim": 32,
         "char_hidden": 64, "hidden": 200, "layers": 2}


def _sentences():
    """Word forms of every sentence: EWT dev's syntactic words, or random ones."""
    import numpy as np

    if DEV.exists():
        out, words = [], []
        for line in DEV.read_text(encoding="utf-8").splitlines():
            if not line:
                if words:
                    out.append(words)
                words = []
            elif not line.startswith("#"):
                cols = line.split("\t")
                if cols[0].isdigit():
                    words.append(cols[1])
        return out, "ewt-dev"
    g = np.random.default_rng(0)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    return [["".join(g.choice(letters, g.integers(1, 9))) for _ in range(g.integers(1, 40))]
            for _ in range(2000)], "random"


def _batches(sentences, size: int):
    """Indices in batches of similar length (as rnnlab's tasks.tagging.length_batches)."""
    order = sorted(range(len(sentences)), key=lambda i: (len(sentences[i]), i))
    return [order[i:i + size] for i in range(0, len(order), size)]


def _encode(sentences, idx):
    """(words (T, B), lengths, spelling (T, B), spellings (L, U), spelling lengths) as numpy."""
    import numpy as np

    batch = [sentences[i] for i in idx]
    lengths = np.array([len(s) for s in batch])
    T, B = lengths.max(), len(batch)
    words = np.zeros((T, B), np.int64)
    spelling = np.zeros((T, B), np.int64)
    index: dict[str, int] = {}
    for b, s in enumerate(batch):
        words[:len(s), b] = [zlib.crc32(w.lower().encode()) % (SIZES["words"] - 2) + 2
                             for w in s]
        spelling[:len(s), b] = [index.setdefault(w, len(index)) for w in s]
    forms = list(index)
    flen = np.array([len(f) for f in forms])
    chars = np.zeros((flen.max(), len(forms)), np.int64)
    for u, f in enumerate(forms):
        chars[:len(f), u] = [ord(c) % (SIZES["chars"] - 2) + 2 for c in f]
    return words, lengths, spelling, chars, flen


def _time(tag_all, sentences) -> float:
    tag_all()  # warm-up
    start = time.perf_counter()
    tag_all()
    return len(sentences) / (time.perf_counter() - start)


def worker_rnnlab(batch: int, threads: int) -> dict:
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(threads)
    assert "torch" not in sys.modules
    from rnnlab.models.tagger import Tagger, TaggerBatch, TaggerConfig

    s = SIZES
    model = Tagger(TaggerConfig(s["words"], s["chars"], {"upos": s["upos"], "xpos": s["xpos"]},
                                s["word_dim"], s["char_dim"], s["char_hidden"], s["hidden"],
                                s["layers"]), seed=0)
    sentences, source = _sentences()
    batches = [_encode(sentences, idx) for idx in _batches(sentences, batch)]

    def tag_all():
        for words, lengths, spelling, chars, flen in batches:
            model.predict(TaggerBatch(words, lengths, spelling, chars, flen))

    blas = threadpool_info()[0]
    return {"sentences_per_s": _time(tag_all, sentences), "source": source,
            "blas": f"{blas['internal_api']} {blas['version']} x{blas['num_threads']}"}


def worker_torch(batch: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    assert "rnnlab" not in sys.modules
    nn, s = torch.nn, SIZES
    pack = nn.utils.rnn.pack_padded_sequence

    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.words = nn.Embedding(s["words"], s["word_dim"])
            self.chars = nn.Embedding(s["chars"], s["char_dim"])
            self.char_rnn = nn.LSTM(s["char_dim"], s["char_hidden"], bidirectional=True)
            self.rnn = nn.LSTM(s["word_dim"] + 2 * s["char_hidden"], s["hidden"],
                               num_layers=s["layers"], bidirectional=True)
            self.upos = nn.Linear(2 * s["hidden"], s["upos"])
            self.xpos = nn.Linear(2 * s["hidden"], s["xpos"])

        def forward(self, words, lengths, spelling, chars, flen):
            _, (h_n, _) = self.char_rnn(pack(self.chars(chars), flen, enforce_sorted=False))
            spelled = torch.cat([h_n[0], h_n[1]], dim=-1)
            x = torch.cat([self.words(words), spelled[spelling]], dim=-1)
            h, _ = self.rnn(pack(x, lengths, enforce_sorted=False))
            h, _ = nn.utils.rnn.pad_packed_sequence(h)
            return self.upos(h).argmax(-1), self.xpos(h).argmax(-1)

    model = Tagger().eval()
    sentences, source = _sentences()
    batches = [tuple(torch.from_numpy(a) for a in _encode(sentences, idx))
               for idx in _batches(sentences, batch)]

    def tag_all():
        with torch.no_grad():
            for b in batches:
                upos, xpos = model(*b)
                lengths = b[1].tolist()
                [(upos[:n, j], xpos[:n, j]) for j, n in enumerate(lengths)]

    return {"sentences_per_s": _time(tag_all, sentences), "source": source,
            "blas": f"torch {torch.__version__} x{torch.get_num_threads()}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=["rnnlab", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        fn = worker_rnnlab if args.worker == "rnnlab" else worker_torch
        print(json.dumps(fn(args.batch, args.threads)))
        return
    print(f"# tagging speed, {time.strftime('%Y-%m-%d')}, {args.threads} threads, batch "
          f"{args.batch}, {args.rounds} alternating rounds, each side in its own process")
    rn, tc = [], []
    for _ in range(args.rounds):
        common = ("--batch", str(args.batch), "--threads", str(args.threads))
        r = run_worker(__file__, "rnnlab", *common)
        t = run_worker(__file__, "torch", *common)
        rn.append(r["sentences_per_s"])
        tc.append(t["sentences_per_s"])
    a, b = statistics.median(rn), statistics.median(tc)
    print("| data | rnnlab sentences/s | torch sentences/s | ratio rnnlab/torch |")
    print("|---|---:|---:|---:|")
    print(f"| {r['source']} | {a:,.0f} | {b:,.0f} | {a / b:.2f} |  ({r['blas']}; {t['blas']})")
    print(f"ratio rnnlab/torch sentences/s: {a / b:.2f}")


if __name__ == "__main__":
    main()
