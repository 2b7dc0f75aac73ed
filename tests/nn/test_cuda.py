"""rnnlab on device="cuda" against the NumPy result (and, on a GPU, torch's cuDNN on the same
GPU): every layer with lengths, both directions and two layers, gradients included; the
language model's training steps; checkpoints across devices.

Each test runs twice (the ``cp`` fixture):
* ``stand-in``: on the CPU, with tests/cuda_standin.py in place of CuPy (the real CUDA C bodies
  compiled for the host; arrays that refuse to mix with host arrays). It needs a C++ compiler.
* ``gpu``: with CuPy on a GPU, where there is one (``require_cuda``: skipped elsewhere, CI
  included, which has no GPU). benchmarks/gpu_check.sh runs this file on a GPU machine.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TORCH, require_cuda, require_tool
from cuda_standin import host_library, install
from numerics import assert_close

import rnnlab
from rnnlab import optim
from rnnlab.models.language_model import LanguageModel, LMConfig
from rnnlab.nn import backend, kernels
from rnnlab.nn.backend import to_host

TOL = {np.float64: (1e-10, 1e-12), np.float32: (1e-5, 1e-5)}
CLASSES = {"lstm": rnnlab.LSTM, "gru": rnnlab.GRU, "rnn_tanh": rnnlab.RNN,
           "rnn_relu": rnnlab.RNN}


@pytest.fixture(scope="module")
def compiled_kernels(tmp_path_factory):
    """The kernel set's CUDA C compiled for the host."""
    return host_library(require_tool("g++"), tmp_path_factory.mktemp("cuda_host"))


@pytest.fixture(params=["stand-in", "gpu"])
def cp(request, monkeypatch):
    """CuPy on a GPU, or the CPU stand-in for it."""
    if request.param == "gpu":
        return require_cuda()
    return install(monkeypatch, request.getfixturevalue("compiled_kernels"))


def _on_gpu(cp) -> bool:
    return cp.__version__ != "stand-in"


@pytest.fixture(scope="module")
def torch_cuda():
    """torch on the GPU with TF32 off (cuDNN's float32 then computes in float32)."""
    if TORCH is None or not TORCH.cuda.is_available():
        pytest.skip("torch with CUDA not available")
    TORCH.backends.cuda.matmul.allow_tf32 = False
    TORCH.backends.cudnn.allow_tf32 = False
    return TORCH


def _layer(kind, dtype, device, **kw):
    extra = {"nonlinearity": kind.split("_")[1]} if kind.startswith("rnn") else {}
    return CLASSES[kind](5, 6, num_layers=2, bidirectional=True, dtype=dtype, seed=7,
                         device=device, **extra, **kw)


def _data(kind, dtype, lengths):
    g = np.random.default_rng(11)
    T, B, H = 7, 5, 6
    x = g.standard_normal((T, B, 5)).astype(dtype)
    dout = g.standard_normal((T, B, 2 * H)).astype(dtype)
    n = 2 if kind == "lstm" else 1
    state = [(0.5 * g.standard_normal((4, B, H))).astype(dtype) for _ in range(n)]
    dstate = [g.standard_normal((4, B, H)).astype(dtype) for _ in range(n)]
    lens = [7, 3, 5, 1, 7] if lengths else None
    return x, state, dstate, dout, lens


def _run(m, kind, x, state, dstate, dout, lens, to):
    pack = tuple if kind == "lstm" else (lambda s: s[0])
    out, hn = m(to(x), pack([to(s) for s in state]), lengths=lens)
    m.zero_grad()
    dx, ds0 = m.backward(to(dout), pack([to(s) for s in dstate]))
    hn = list(hn) if kind == "lstm" else [hn]
    ds0 = list(ds0) if kind == "lstm" else [ds0]
    return {"out": to_host(out), "dx": to_host(dx),
            **{f"state_n{i}": to_host(s) for i, s in enumerate(hn)},
            **{f"dstate0{i}": to_host(s) for i, s in enumerate(ds0)},
            **{f"grad {k}": to_host(v) for k, v in m.grads.items()}}


def _torch_run(torch, m, kind, x, state, dstate, dout, lens):
    """The same layer in torch on the GPU (cuDNN), from rnnlab's weights."""
    nn_utils = torch.nn.utils.rnn
    tdt = torch.float64 if x.dtype == np.float64 else torch.float32
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(kind, torch.nn.RNN)
    extra = {"nonlinearity": kind.split("_")[1]} if kind.startswith("rnn") else {}
    tm = cls(5, 6, num_layers=2, bidirectional=True, dtype=tdt, device="cuda", **extra)
    tm.load_state_dict({k: torch.tensor(v) for k, v in m.state_dict().items()})
    T = x.shape[0]

    def t(a, grad=False):
        return torch.tensor(a, dtype=tdt, device="cuda", requires_grad=grad)

    xt, st = t(x, True), [t(s, True) for s in state]
    inp = xt if lens is None else nn_utils.pack_padded_sequence(
        xt, torch.tensor(lens), enforce_sorted=False)
    out, hn = tm(inp, tuple(st) if kind == "lstm" else st[0])
    if lens is not None:
        out, _ = nn_utils.pad_packed_sequence(out, total_length=T)
    hn = list(hn) if kind == "lstm" else [hn]
    loss = (out * t(dout)).sum() + sum((h * t(d)).sum() for h, d in zip(hn, dstate, strict=True))
    loss.backward()
    params = dict(tm.named_parameters())
    return {"out": out.detach().cpu().numpy(), "dx": xt.grad.cpu().numpy(),
            **{f"state_n{i}": s.detach().cpu().numpy() for i, s in enumerate(hn)},
            **{f"dstate0{i}": s.grad.cpu().numpy() for i, s in enumerate(st)},
            **{f"grad {k}": params[k].grad.cpu().numpy() for k in tm.state_dict()}}


def _same(got, ref, dtype):
    rtol, atol = TOL[dtype]
    assert got.keys() == ref.keys()
    for k in ref:
        assert_close(got[k], ref[k], rtol, atol, k)


@pytest.mark.parametrize("kind", list(CLASSES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("lengths", [False, True])
def test_layer_on_cuda_equals_numpy_and_cudnn(cp, request, kind, dtype, lengths):
    x, state, dstate, dout, lens = _data(kind, dtype, lengths)
    with kernels.use_kernels("numpy"):
        ref = _run(_layer(kind, dtype, "cpu"), kind, x, state, dstate, dout, lens, lambda a: a)
    m = _layer(kind, dtype, "cuda")
    got = _run(m, kind, x, state, dstate, dout, lens, cp.asarray)
    _same(got, ref, dtype)
    if _on_gpu(cp):
        torch = request.getfixturevalue("torch_cuda")
        _same(got, _torch_run(torch, m, kind, x, state, dstate, dout, lens), dtype)


@pytest.mark.parametrize("kind", list(CLASSES))
@pytest.mark.parametrize("lengths", [False, True])
def test_inference_forward_on_cuda_equals_the_training_forward(cp, kind, lengths):
    """Under no_grad the cuda set keeps the cell state in two rows used in turn and one row of
    tanh(c) / h W_hn^T + b_hn: the outputs and final states are the training forward's."""
    x, state, _, _, lens = _data(kind, np.float64, lengths)
    m = _layer(kind, np.float64, "cuda")
    pack = tuple if kind == "lstm" else (lambda s: s[0])
    states = pack([cp.asarray(s) for s in state])
    out, final = m(cp.asarray(x), states, lengths=lens)
    with rnnlab.nn.no_grad():
        out_i, final_i = m(cp.asarray(x), states, lengths=lens)
    assert m._cache is None
    np.testing.assert_array_equal(to_host(out_i), to_host(out))
    finals = (list(final), list(final_i)) if kind == "lstm" else ([final], [final_i])
    for want, got in zip(*finals, strict=True):
        np.testing.assert_array_equal(to_host(got), to_host(want))


@pytest.fixture
def host_masks(monkeypatch):
    """Dropout masks drawn on the host (as on the CPU) and copied over, so that a model with
    dropout gives the CPU's numbers on cuda too."""
    from rnnlab.nn import layers, recurrent

    def host_mask(rng, shape, p, dtype, device="cpu"):
        return backend.to_device(backend.dropout_mask(rng, shape, p, dtype), device)

    monkeypatch.setattr(recurrent, "dropout_mask", host_mask)
    monkeypatch.setattr(layers, "dropout_mask", host_mask)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_batch_first_unbatched_and_dropout_on_cuda(cp, host_masks, kind):
    """batch_first, an unbatched input and dropout between layers give the NumPy result."""
    g = np.random.default_rng(0)
    x = g.standard_normal((3, 4, 5))
    for shape_x in (x, x[0]):
        with kernels.use_kernels("numpy"):
            a = _layer(kind, np.float64, "cpu", batch_first=True, dropout=0.3)
            out_a, _ = a(shape_x)
        b = _layer(kind, np.float64, "cuda", batch_first=True, dropout=0.3)
        out_b, _ = b(cp.asarray(shape_x))
        assert isinstance(out_b, cp.ndarray)
        assert_close(to_host(out_b), out_a, 1e-10, 1e-12, "out")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_masks_made_on_the_gpu(cp, dtype):
    """0 or 1 / (1 - p), kept with probability 1 - p, the same for the same seed."""
    p, shape = 0.3, (50, 40, 50)
    masks = [to_host(backend.dropout_mask(np.random.default_rng(s), shape, p, np.dtype(dtype),
                                          "cuda")) for s in (1, 1, 2)]
    assert masks[0].dtype == dtype
    assert set(np.unique(masks[0])) == {0.0, dtype(1 / (1 - p))}
    assert abs((masks[0] > 0).mean() - (1 - p)) < 0.01
    np.testing.assert_array_equal(masks[0], masks[1])
    assert (masks[0] != masks[2]).mean() > 0.3
    lm = [_lm("cuda") for _ in range(2)]
    ids = np.random.default_rng(0).integers(0, 40, size=(5, 3))
    losses = [m.forward_loss(ids, ids, scale=None)[0] for m in lm]  # training mode: dropout
    assert losses[0] == losses[1]


def test_to_moves_and_back(cp):
    g = np.random.default_rng(1)
    x = g.standard_normal((4, 3, 5))
    m = rnnlab.LSTM(5, 6, dtype=np.float64, seed=2)
    ref, _ = m(x)
    m.to("cuda")
    assert all(isinstance(p, cp.ndarray) for p in m.parameters().values())
    assert all(isinstance(v, np.ndarray) for v in m.state_dict().values())
    got, _ = m(cp.asarray(x))
    assert_close(to_host(got), ref, 1e-10, 1e-12, "out")
    with pytest.raises(ValueError, match="x: expected an array on 'cuda'"):
        m(x)
    m.to("cpu")
    np.testing.assert_allclose(m(x)[0], ref, rtol=1e-12)


def _lm(device, dtype="float64", tie=False):
    cfg = LMConfig(vocab_size=40, embed_size=12, hidden_size=12, num_layers=2, dropout=0.3,
                   tie_weights=tie, dtype=dtype)
    return LanguageModel(cfg, seed=5, device=device)


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_lm_train_steps_equal_on_cpu_and_cuda(cp, host_masks, tie, opt):
    g = np.random.default_rng(3)
    ids = g.integers(0, 40, size=(6, 4, 3))  # three windows of (T=6, B=4)
    results = []
    for device in ("cpu", "cuda"):
        with kernels.use_kernels("numpy"):
            model = _lm(device, tie=tie)
            params = model.parameters()
            o = (optim.SGD(params, lr=0.5, momentum=0.9) if opt == "sgd"
                 else optim.Adam(params, lr=1e-2))
            state, losses, norms = model.initial_state(4), [], []
            for w in range(2):
                model.zero_grad(lazy=True)
                nll, count, state = model.forward_loss(ids[:, :, w], ids[:, :, w + 1], state,
                                                       scale=1.0 / 24)
                model.backward_loss()
                grads, rows = model.grads_and_rows()
                norms.append(optim.clipped_step(o, grads, 0.25, rows))
                losses.append(nll)
            results.append((losses, norms, model.state_dict(), o.state_dict()[0]))
    (l_cpu, n_cpu, w_cpu, s_cpu), (l_gpu, n_gpu, w_gpu, s_gpu) = results
    np.testing.assert_allclose(l_gpu, l_cpu, rtol=1e-10)
    np.testing.assert_allclose(n_gpu, n_cpu, rtol=1e-10)
    for k in w_cpu:
        assert_close(w_gpu[k], w_cpu[k], 1e-10, 1e-12, k)
    for k in s_cpu:
        assert isinstance(s_gpu[k], np.ndarray)
        assert_close(s_gpu[k], s_cpu[k], 1e-10, 1e-12, k)


def test_lm_float32_loss_and_evaluation_on_cuda(cp):
    from rnnlab.tasks.lm.task import evaluate

    ids = np.random.default_rng(4).integers(0, 40, size=300)
    losses = [evaluate(_lm(device, dtype="float32"), ids, batch_size=7, bptt=9)
              for device in ("cpu", "cuda")]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


def test_checkpoint_saved_on_cuda_loads_on_cpu(cp, tmp_path, capsys):
    pytest.importorskip("scipy", reason="the CLI's parser imports it")
    from rnnlab.cli.main import main
    from rnnlab.tasks.lm.task import load_run

    text = tmp_path / "lm.txt"
    text.write_text("the cat sat on the mat and the dog sat on the log\n" * 40,
                    encoding="utf-8")
    run = tmp_path / "run"
    argv = ["train", "lm", "--data", str(text), "--out", str(run), "--max-steps", "3",
            "--hidden", "8", "--embed", "8", "--layers", "2", "--batch-size", "4", "--bptt",
            "5", "--samples", "1", "--sample-length", "5", "--no-progress"]
    assert main([*argv, "--device", "cuda"]) == 0
    gpu_model, *_ = load_run(run, device="cuda")
    cpu_model, *_ = load_run(run, device="cpu")
    for k, v in cpu_model.state_dict().items():
        np.testing.assert_array_equal(gpu_model.state_dict()[k], v)
    capsys.readouterr()
    for device in ("cpu", "cuda"):
        assert main(["eval", "--checkpoint", str(run), "--device", device]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == lines[1]
    assert main(["generate", "--checkpoint", str(run), "--prompt", "the cat", "--length", "4",
                 "--device", "cuda"]) == 0
    assert main(["train", "lm", "--out", str(run), "--resume", "--max-steps", "5",
                 "--no-progress", "--samples", "0", "--device", "cpu"]) == 0


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_optimizer_to_moves_its_state_mid_run(cp, opt):
    """Three steps on the CPU equal one there, then the parameters and the optimizer moved with
    Optimizer.to, then two on cuda; a moved parameter of another shape is refused."""
    g = np.random.default_rng(6)
    grads = [{"w": g.standard_normal((3, 4)), "b": g.standard_normal(4)} for _ in range(3)]

    def start():
        params = {"w": np.linspace(-1, 1, 12).reshape(3, 4), "b": np.zeros(4)}
        o = (optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True) if opt == "sgd"
             else optim.Adam(params, lr=1e-2, weight_decay=0.1))
        return params, o

    ref_params, ref = start()
    for gr in grads:
        ref.step(gr, grad_scale=0.5)
    params, o = start()
    o.step(grads[0], grad_scale=0.5)
    with pytest.raises(ValueError, match=r"params\['w'\]: expected shape \(3, 4\), got \(4, 3\)"):
        o.to("cuda", {"w": cp.asarray(params["w"].T.copy()), "b": cp.asarray(params["b"])})
    moved = {k: cp.asarray(v) for k, v in params.items()}
    assert o.to("cuda", moved) is o
    with pytest.raises(ValueError, match=r"grads\['w'\]: expected an array on 'cuda' \(its "
                       r"parameter's device\), got one on 'cpu'"):
        o.step(grads[1])
    for gr in grads[1:]:
        o.step({k: cp.asarray(v) for k, v in gr.items()}, grad_scale=0.5)
    for k in ref_params:
        assert isinstance(moved[k], cp.ndarray)
        assert_close(to_host(moved[k]), ref_params[k], 1e-12, 1e-14, k)
    for k, v in ref.state_dict()[0].items():
        assert_close(o.state_dict()[0][k], v, 1e-12, 1e-14, k)


def test_grad_norm_on_cuda_redoes_an_overflowing_float32_sum_in_float64(cp):
    """A float32 sum of squares that overflows is redone in float64, as on the CPU; host and
    device gradients in one call add up."""
    host = {"a": np.full(1000, 1e20, np.float32), "b": np.full(10, 3.0, np.float32)}
    ref = optim.grad_norm(host)
    assert np.isfinite(ref)
    mixed = {"a": cp.asarray(host["a"]), "b": host["b"]}
    with np.errstate(over="ignore"):  # the stand-in's NumPy warns of the overflow; CuPy does not
        on_device = optim.grad_norm({k: cp.asarray(v) for k, v in host.items()})
        both = optim.grad_norm(mixed)
    assert on_device == pytest.approx(ref, rel=1e-6)
    assert both == pytest.approx(ref, rel=1e-6)
