"""`rnnlab train speech` and `rnnlab transcribe` end to end on a tiny synthetic corpus (each
label a tone): isolated words and connected speech with CTC, the final lines and the confusion
matrix, the transcription lines (any sample rate), the plot, resuming to the uninterrupted run,
and bad input as one clear line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from audio_helpers import RATE, TONES, write_corpus
from conftest import require_module
from scipy.io import wavfile

from rnnlab.cli.main import main
from rnnlab.io import load_checkpoint

SMALL = ["--hidden", "12", "--layers", "1", "--no-progress", "--valid", "0.34"]
LINE = re.compile(r"^(?P<file>[^\t]+)\t(?P<labels>[0-9]*)\t(?P<conf>[01]\.\d{3})$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("speech") / "tones")


@pytest.fixture(scope="module")
def digits_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert main(["train", "speech", "--data", str(corpus), "--task", "digits", "--out",
                 str(out), "--epochs", "12", "--lr", "0.01", *SMALL]) == 0
    return out


def tone(path, labels, rate=RATE, pause=0.15):
    """A connected 'utterance' of tones at any sample rate."""
    pieces = []
    for lab in labels:
        n = int(0.22 * rate)
        t = np.arange(n) / rate
        pieces += [np.zeros(int(pause * rate)), 0.4 * np.sin(2 * np.pi * TONES[lab] * t)
                   * np.hanning(n)]
    pieces.append(np.zeros(int(pause * rate)))
    wavfile.write(path, rate, (np.concatenate(pieces) * 32767).astype(np.int16))
    return path


def test_train_digits_and_transcribe(digits_run, corpus, tmp_path, capsys):
    records = [json.loads(line) for line in (digits_run / "metrics.jsonl").open()]
    final = records[-1]
    assert final["final"] and final["test_acc"] >= 0.9  # tones are easy
    assert 0 <= final["test_nn_baseline"] <= 1
    confusion = (digits_run / "confusion.txt").read_text()
    assert confusion.splitlines()[0].split()[:3] == ["0", "1", "2"]
    _, state, _ = load_checkpoint(digits_run / "checkpoint")
    assert state["kind"] == "speech" and state["classes"] == ["0", "1", "2"]
    capsys.readouterr()
    files = [str(tone(tmp_path / "one.wav", "2", pause=0.02)),
             str(tone(tmp_path / "one16k.wav", "1", rate=16000, pause=0.02))]
    assert main(["transcribe", "--checkpoint", str(digits_run), *files]) == 0
    lines = capsys.readouterr().out.splitlines()
    got = [LINE.match(line) for line in lines]
    assert all(got) and [m["file"] for m in got] == files
    assert [m["labels"] for m in got] == ["2", "1"]


def test_transcribe_plot_and_bad_files(digits_run, tmp_path, capsys):
    require_module("matplotlib")
    good = tone(tmp_path / "a.wav", "0")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00not really a wave file")
    short = tmp_path / "short.wav"
    wavfile.write(short, RATE, np.zeros(40, np.int16))  # 5 ms: shorter than one frame
    capsys.readouterr()
    code = main(["transcribe", "--checkpoint", str(digits_run), str(bad), str(good),
                 str(short)])
    out, err = capsys.readouterr()
    assert code == 1 and len(out.splitlines()) == 1 and LINE.match(out.splitlines()[0])
    errors = err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("rnnlab: error: ") for e in errors)
    assert "bad.wav" in errors[0] and "short.wav" in errors[1]
    silence = tmp_path / "silence.wav"
    wavfile.write(silence, RATE, np.zeros(RATE // 2, np.int16))
    assert main(["transcribe", "--checkpoint", str(digits_run), str(silence)]) == 0
    assert LINE.match(capsys.readouterr().out.strip())  # silence is a result, not a crash
    png = tmp_path / "a.png"
    assert main(["transcribe", "--checkpoint", str(digits_run), str(good), "--plot",
                 str(png)]) == 0
    assert png.stat().st_size > 5000
    assert main(["transcribe", "--checkpoint", str(digits_run), str(good), str(good),
                 "--plot", str(png)]) == 2
    assert "--plot draws one file" in capsys.readouterr().err
    # a long file is refused before it is read
    long = tmp_path / "long.wav"
    wavfile.write(long, RATE, np.zeros(RATE * 3, np.int16))
    assert main(["transcribe", "--checkpoint", str(digits_run), str(long),
                 "--max-seconds", "2"]) == 1
    assert "long.wav" in capsys.readouterr().err


def test_connected_with_ctc(corpus, tmp_path, capsys):
    out = tmp_path / "ctc"
    assert main(["train", "speech", "--data", str(corpus), "--task", "connected", "--out",
                 str(out), "--epochs", "3", "--utterances", "64", "--eval-utterances", "16",
                 "--max-len", "3", "--lr", "0.01", "--beam", "4", *SMALL]) == 0
    text = capsys.readouterr().out
    assert re.search(r"final \(best validation model\): test digit error rate greedy "
                     r"\d+\.\d\d% \(strings right \d+\.\d\d%\), beam 4 \d+\.\d\d%", text)
    final = [json.loads(line) for line in (out / "metrics.jsonl").open()][-1]
    for k in ("test_greedy_der", "test_beam_der", "test_greedy_string_acc",
              "test_beam_string_acc"):
        assert np.isfinite(final[k]) and final[k] >= 0, k  # three epochs: not yet good
    wav = tone(tmp_path / "u.wav", "201")
    assert main(["transcribe", "--checkpoint", str(out), str(wav), "--beam", "1"]) == 0
    m = LINE.match(capsys.readouterr().out.strip())
    assert m and set(m["labels"]) <= set(TONES)
    silence = tmp_path / "silence.wav"
    wavfile.write(silence, RATE, np.zeros(RATE, np.int16))
    assert main(["transcribe", "--checkpoint", str(out), str(silence)]) == 0  # a result
    assert LINE.match(capsys.readouterr().out.strip())
    if require_module("matplotlib"):
        png = tmp_path / "ctc.png"
        assert main(["transcribe", "--checkpoint", str(out), str(wav), "--plot", str(png)]) == 0
        assert png.stat().st_size > 5000


def test_resume_matches_the_uninterrupted_run(corpus, tmp_path):
    args = ["train", "speech", "--data", str(corpus), "--task", "digits", "--epochs", "3",
            *SMALL]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main([*args, "--out", str(full)]) == 0
    assert main([*args, "--out", str(cut), "--max-steps", "2"]) == 0
    assert main(["train", "speech", "--out", str(cut), "--resume", "--max-steps", "0",
                 "--no-progress"]) == 0
    w_full, _, _ = load_checkpoint(full / "checkpoint")
    w_cut, _, _ = load_checkpoint(cut / "checkpoint")
    for k in w_full:
        np.testing.assert_array_equal(w_full[k], w_cut[k], err_msg=k)


def test_without_validation_the_last_model_is_kept(corpus, tmp_path, capsys):
    out = tmp_path / "noval"
    assert main(["train", "speech", "--data", str(corpus), "--out", str(out), "--epochs", "2",
                 "--no-augment", *SMALL, "--valid", "0"]) == 0
    assert "recordings: 18 fit, 0 valid, 30 test" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert records[-1]["final"] and "valid_acc" not in records[0]


def test_bad_input_is_one_line(corpus, tmp_path, capsys, lm_run):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["train", "speech", "--data", str(empty), "--out", str(tmp_path / "r")],
         "expected .wav files"),
        (["train", "speech", "--out", str(tmp_path / "r")], "expected --data DIR"),
        (["train", "speech", "--data", str(corpus), "--out", str(tmp_path / "r"),
          "--test-speaker", "zed"], "expected one of ann, bob"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("rnnlab: error: ") and message in err, err
        assert len(err.strip().splitlines()) == 1
    # a checkpoint of another task
    capsys.readouterr()
    wav = tone(tmp_path / "x.wav", "1")
    assert main(["transcribe", "--checkpoint", str(lm_run), str(wav)]) == 2
    assert "expected a speech checkpoint" in capsys.readouterr().err
