"""Memory checks: parameter counts from configs equal what gets built; a configuration too big
for the machine is refused, before anything is allocated, with one line giving the size.

The available memory is pinned (monkeypatched) wherever a test depends on it, so no test here
allocates more than a few kilobytes, on any machine."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

import rnnlab
from rnnlab.cli.main import main
from rnnlab.models.language_model import LanguageModel, LMConfig
from rnnlab.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnlab.nn import memory
from rnnlab.nn.layers import Embedding, Linear
from rnnlab.nn.memory import NotEnoughMemory, human_bytes, require_memory
from rnnlab.nn.module import Module
from rnnlab.nn.recurrent import GRU, LSTM, RNN

GiB = 1 << 30


@pytest.fixture
def machine(monkeypatch):
    """A machine with 16 GiB available, whatever this one has."""
    monkeypatch.setattr(memory, "available_bytes", lambda: 16 * GiB)


@pytest.fixture
def no_allocation(monkeypatch):
    """Any parameter allocated fails the test."""
    def refuse(self, name, value):
        raise AssertionError(f"{type(self).__name__} allocated {name!r} before the check")
    monkeypatch.setattr(Module, "_add_param", refuse)


def size(module: Module) -> int:
    return sum(p.size for p in module.parameters().values())


# ------------------------------------------------------------------ counts == what is built
@pytest.mark.parametrize("cls, layers, bias, bidirectional",
                         list(itertools.product([LSTM, GRU, RNN], [1, 3], [True, False],
                                                [False, True])))
def test_layer_count_equals_built(cls, layers, bias, bidirectional):
    layer = cls(3, 5, num_layers=layers, bias=bias, bidirectional=bidirectional, seed=0)
    assert cls.count_parameters(3, 5, layers, bias, bidirectional) == size(layer)


@pytest.mark.parametrize("cell, layers, tie",
                         list(itertools.product(["lstm", "gru", "rnn"], [1, 2, 3], [False, True])))
def test_lm_num_parameters_equals_built(cell, layers, tie):
    cfg = LMConfig(vocab_size=11, cell=cell, embed_size=6, hidden_size=6 if tie else 7,
                   num_layers=layers, tie_weights=tie)
    assert cfg.num_parameters() == size(LanguageModel(cfg, seed=0))


@pytest.mark.parametrize("cell, layers, bidirectional, attention, peeky", list(itertools.product(
    ["lstm", "gru"], [1, 2], [False, True], ["none", "dot", "general", "additive"],
    [False, True])))
def test_seq2seq_num_parameters_equals_built(cell, layers, bidirectional, attention, peeky):
    cfg = Seq2SeqConfig(src_vocab=9, tgt_vocab=7, cell=cell, embed_size=3, hidden_size=4,
                        num_layers=layers, bidirectional=bidirectional, attention=attention,
                        peeky=peeky)
    assert cfg.num_parameters() == size(Seq2Seq(cfg, seed=0))


def test_num_parameters_builds_nothing(no_allocation):
    assert LMConfig(vocab_size=10**6, hidden_size=10**5, num_layers=10**5).num_parameters() > 0
    assert Seq2SeqConfig(src_vocab=10**6, tgt_vocab=10**6, hidden_size=10**6).num_parameters() > 0


# ------------------------------------------------------------------ require_memory
def test_require_memory_message(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: GiB)
    with pytest.raises(NotEnoughMemory) as err:
        require_memory(3 * GiB, "X(1, 2): its arrays")
    assert str(err.value) == ("X(1, 2): its arrays need 3.0 GiB, more than the 1.0 GiB this "
                              "machine has available")
    assert isinstance(err.value, MemoryError) and isinstance(err.value, ValueError)


def test_require_memory_passes_what_fits(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: GiB)
    require_memory(GiB, "exactly what is available")
    require_memory(0, "nothing")


def test_unknown_memory_is_not_checked(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: None)
    require_memory(10**30, "anything")


def test_available_bytes_falls_back_to_physical_memory(monkeypatch):
    real = memory.available_bytes()
    assert real is None or (isinstance(real, int) and real > 0)

    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")
    monkeypatch.setattr(memory, "open", no_proc, raising=False)
    monkeypatch.setattr(memory.os, "sysconf", {"SC_PHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}.get)
    assert memory.available_bytes() == 4096 * 1000
    monkeypatch.setattr(memory.os, "sysconf", lambda name: (_ for _ in ()).throw(ValueError(name)))
    assert memory.available_bytes() is None


@pytest.mark.parametrize("n, text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                     (21.3 * GiB, "21.3 GiB"), (1 << 90, "1024.0 YiB")])
def test_human_bytes(n, text):
    assert human_bytes(n) == text


# ------------------------------------------------------------------ layers and models refuse
def test_lstm_too_big_is_refused_before_allocating(machine, no_allocation):
    with pytest.raises(NotEnoughMemory, match=r"^LSTM\(100000, 100000, num_layers=1000\): its "
                       r"8\.0e13 float32 parameters and their gradients need 582\.1 TiB, more "
                       r"than the 16\.0 GiB this machine has available$"):
        rnnlab.LSTM(100000, 100000, num_layers=1000)


def test_lstm_too_big_for_this_machine():
    if memory.available_bytes() is None:
        pytest.skip("this machine does not say how much memory it has")
    with pytest.raises(NotEnoughMemory):
        rnnlab.LSTM(100000, 100000, num_layers=1000)


@pytest.mark.parametrize("build, name", [
    (lambda: GRU(10, 10**5, num_layers=10, bidirectional=True, dtype=np.float64),
     "GRU(10, 100000, num_layers=10, bidirectional=True)"),
    (lambda: RNN(10**5, 10**5, num_layers=10), "RNN(100000, 100000, num_layers=10)"),
    (lambda: Linear(10**5, 10**5), "Linear(100000, 100000)"),
    (lambda: Embedding(10**6, 10**4), "Embedding(1000000, 10000)"),
    (lambda: LanguageModel(LMConfig(vocab_size=10**6, embed_size=10**4)), "LanguageModel(lstm"),
    (lambda: Seq2Seq(Seq2SeqConfig(src_vocab=10**6, tgt_vocab=10**6, embed_size=10**4)),
     "Seq2Seq(lstm"),
])
def test_too_big_is_refused_before_allocating(machine, no_allocation, build, name):
    with pytest.raises(NotEnoughMemory) as err:
        build()
    assert str(err.value).startswith(name) and "\n" not in str(err.value)


def test_what_fits_still_builds(machine):
    LanguageModel(LMConfig(vocab_size=50, embed_size=8, hidden_size=8, num_layers=2), seed=0)
    Seq2Seq(Seq2SeqConfig(src_vocab=12, tgt_vocab=12, attention="additive", peeky=True), seed=0)
    rnnlab.GRU(4, 8, num_layers=2, bidirectional=True)


def test_cli_refuses_in_one_line(machine, no_allocation, tmp_path, capsys):
    out = tmp_path / "x"
    start = time.perf_counter()
    code = main(["train", "lm", "--layers", "100000", "--hidden", "100000", "--out", str(out)])
    elapsed = time.perf_counter() - start
    captured = capsys.readouterr()
    assert code == 2
    line = captured.err.rstrip("\n")
    assert "\n" not in line and "Traceback" not in captured.err
    assert line.startswith("rnnlab: error: LanguageModel(lstm, vocab_size=")
    assert line.endswith("hidden_size=100000, num_layers=100000): its 8.0e15 float32 parameters "
                         "and their gradients need 56.8 PiB, more than the 16.0 GiB this machine "
                         "has available")
    assert not out.exists()
    assert elapsed < 20  # loading the bundled corpus, and nothing else


def test_an_optimizer_whose_state_cannot_fit_is_refused_before_allocating(monkeypatch):
    """Adam keeps two buffers per parameter: 2 x 1 MiB of float64 state against 1.5 MiB."""
    from rnnlab import optim

    monkeypatch.setattr(memory, "available_bytes", lambda: 3 * 2**19)
    params = {"w": np.zeros(2**17)}  # 1 MiB
    optim.SGD(params, lr=0.1)  # no state
    optim.SGD(params, lr=0.1, momentum=0.9)  # one buffer: fits
    with pytest.raises(memory.NotEnoughMemory,
                       match=r"^Adam: its state \(262,144 values\) need 2\.0 MiB, more than the "
                             r"1\.5 MiB this machine has available$"):
        optim.Adam(params, lr=0.1)
