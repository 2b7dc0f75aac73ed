"""CRF: the loss, every gradient, Viterbi and the marginals against a brute-force enumeration of
every tag sequence, against pytorch-crf (torchcrf.CRF, the same weights, autograd gradients) and
against central differences; padding past the lengths changes nothing; bad inputs raise.

pytorch-crf returns the log-likelihood, the layer its negative: the comparisons flip the sign.
"""

from __future__ import annotations

import itertools

import numerics
import numpy as np
import pytest
from conftest import require_module
from numerics import numeric_grad

from rnnlab.nn import CRF

F64 = np.float64
TOL = 1e-10  # float64 where the answer is exact
GC_RTOL, GC_ATOL = 1e-6, 1e-8
NAMES = ("start_transitions", "end_transitions", "transitions")


def assert_close(got, exp, rtol=TOL, atol=TOL, what=""):
    numerics.assert_close(got, exp, rtol, atol, what)


def make_case(rng, T=4, B=2, K=3, lengths=None, dtype=F64, spread=1.0):
    """A CRF with parameters of order ``spread`` (not the init's 0.1: the transitions must
    matter), emissions (T, B, K), gold tags (T, B), lengths (B,)."""
    crf = CRF(K, dtype=dtype, seed=0)
    crf.load_state_dict({"start_transitions": spread * rng.standard_normal(K),
                         "end_transitions": spread * rng.standard_normal(K),
                         "transitions": spread * rng.standard_normal((K, K))})
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    e = rng.standard_normal((T, B, K)).astype(dtype)
    y = rng.integers(0, K, size=(T, B))
    return crf, e, y, lengths


# ============================================================================================
# Brute force: every one of the K^L tag sequences of each sequence
# ============================================================================================


def features(path, K, T):
    """The counts whose dot product with the scores is score(path): start, end, trans, e[:, b]."""
    f = {"start_transitions": np.zeros(K), "end_transitions": np.zeros(K),
         "transitions": np.zeros((K, K)), "e": np.zeros((T, K))}
    f["start_transitions"][path[0]] = 1
    f["end_transitions"][path[-1]] = 1
    for t, k in enumerate(path):
        f["e"][t, k] += 1
    for i, j in itertools.pairwise(path):
        f["transitions"][i, j] += 1
    return f


def brute_force(crf, e, y, lengths):
    """Per sequence: NLL, dNLL/d(scores) = E[features] - features(gold), marginals, the argmax
    path; each from the full enumeration."""
    params = {k: v.astype(F64) for k, v in crf.parameters().items()}
    T, B, K = e.shape
    out = []
    for b in range(B):
        n = int(lengths[b])
        paths = list(itertools.product(range(K), repeat=n))
        feats = [features(p, K, T) for p in paths]

        def score(f, b=b):
            return (sum(float((params[k] * f[k]).sum()) for k in NAMES)
                    + float((e[:, b].astype(F64) * f["e"]).sum()))

        scores = np.array([score(f) for f in feats])
        log_z = np.logaddexp.reduce(scores)
        prob = np.exp(scores - log_z)
        gold = features(tuple(y[:n, b]), K, T)
        grad = {k: sum(p * f[k] for p, f in zip(prob, feats, strict=True)) - gold[k]
                for k in (*NAMES, "e")}
        marg = sum(p * f["e"] for p, f in zip(prob, feats, strict=True))
        out.append({"nll": log_z - score(gold), "grad": grad, "marginals": marg,
                    "viterbi": list(paths[int(np.argmax(scores))])})
    return out


LENGTHS = [(4, 2), (1, 4), (3, 3), (4, 4)]


@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("reduction", ["sum", "mean", "token_mean", "none"])
def test_nll_and_every_gradient_equal_brute_force(rng, lengths, reduction):
    crf, e, y, L = make_case(rng, lengths=lengths)
    ref = brute_force(crf, e, y, L)
    divisor = {"sum": 1, "none": 1, "mean": len(L), "token_mean": int(L.sum())}[reduction]
    w = rng.uniform(0.5, 2.0, len(L)) if reduction == "none" else np.full(len(L), 0.7)
    nll = crf(e, y, L, reduction)
    if reduction == "none":
        assert nll.shape == (2,) and nll.dtype == F64
        assert_close(nll, [r["nll"] for r in ref], what="nll per sequence")
    else:
        assert isinstance(nll, float)
        assert_close(nll, sum(r["nll"] for r in ref) / divisor, what="nll")
    crf.zero_grad()
    de = crf.backward(w if reduction == "none" else 0.7)
    weights = w / divisor
    assert_close(de, np.stack([wb * r["grad"]["e"] for wb, r in zip(weights, ref, strict=True)],
                              axis=1), what="d emissions")
    for name in NAMES:
        exp = sum(wb * r["grad"][name] for wb, r in zip(weights, ref, strict=True))
        assert_close(crf.grads[name], exp, what=f"d {name}")


@pytest.mark.parametrize("lengths", LENGTHS)
def test_marginals_equal_brute_force_and_sum_to_one(rng, lengths):
    crf, e, y, L = make_case(rng, lengths=lengths)
    ref = brute_force(crf, e, y, L)
    m = crf.marginals(e, L)
    assert m.shape == e.shape and m.dtype == F64
    assert_close(m, np.stack([r["marginals"] for r in ref], axis=1), what="marginals")
    valid = np.arange(4)[:, None] < L
    assert_close(m.sum(axis=2), valid.astype(F64), what="sum over tags: 1 within, 0 past")


def test_viterbi_equals_the_brute_force_argmax(rng):
    for trial in range(20):
        lengths = rng.integers(1, 5, size=2)
        crf, e, y, L = make_case(rng, lengths=lengths, spread=1.0 + trial % 3)
        best = crf.decode(e, L)
        assert best == [r["viterbi"] for r in brute_force(crf, e, y, L)], trial
        assert [len(p) for p in best] == list(L)


def test_sequences_alone_equal_the_padded_batch(rng):
    crf, e, y, L = make_case(rng, T=6, B=4, K=4, lengths=[6, 2, 1, 5])
    nll = crf(e, y, L, "none")
    de = crf.backward(1.0)
    paths = crf.decode(e, L)
    for b, n in enumerate(L):
        alone = crf(e[:n, b:b + 1], y[:n, b:b + 1])
        assert_close(alone, nll[b], what=f"nll of sequence {b}")
        assert_close(crf.backward(1.0), de[:n, b:b + 1], what=f"d emissions of sequence {b}")
        assert crf.decode(e[:n, b:b + 1]) == [paths[b]]


# ============================================================================================
# pytorch-crf: the same weights, its loss, its autograd gradients, its Viterbi
# ============================================================================================


def torch_crf(torch, crf):
    torchcrf = require_module("torchcrf")
    tcrf = torchcrf.CRF(crf.num_tags, batch_first=False).double()
    tcrf.load_state_dict({k: torch.tensor(v) for k, v in crf.state_dict().items()})
    return tcrf


def mask_of(torch, L, T):
    return torch.tensor(np.arange(T)[:, None] < L)


@pytest.mark.parametrize("reduction", ["sum", "mean", "token_mean", "none"])
def test_loss_and_gradients_match_pytorch_crf(torch, rng, reduction):
    T, B, K = 9, 6, 5
    crf, e, y, L = make_case(rng, T, B, K, lengths=[9, 1, 4, 9, 7, 2])
    tcrf = torch_crf(torch, crf)
    te = torch.tensor(e, requires_grad=True)
    llh = tcrf(te, torch.tensor(y), mask_of(torch, L, T), reduction)
    w = rng.uniform(-1, 2, B) if reduction == "none" else 1.3
    (-llh * torch.tensor(w, dtype=torch.float64)).sum().backward()

    nll = crf(e, y, L, reduction)
    assert_close(nll, -llh.detach().numpy(), what="nll")
    crf.zero_grad()
    de = crf.backward(w)
    assert_close(de, te.grad.numpy(), what="d emissions")
    for name, p in tcrf.named_parameters():
        assert_close(crf.grads[name], p.grad.numpy(), what=f"d {name}")


def test_decode_matches_pytorch_crf(torch, rng):
    T, B, K = 12, 8, 6
    for trial in range(5):
        lengths = rng.integers(1, T + 1, size=B)
        crf, e, _, L = make_case(rng, T, B, K, lengths=lengths, spread=2.0)
        tcrf = torch_crf(torch, crf)
        assert crf.decode(e, L) == tcrf.decode(torch.tensor(e), mask_of(torch, L, T)), trial


def test_state_dict_names_and_order_are_pytorch_crfs(torch):
    crf = CRF(4, dtype=F64, seed=0)
    tcrf = require_module("torchcrf").CRF(4)
    assert list(crf.state_dict()) == list(tcrf.state_dict()) == list(NAMES)
    assert {k: v.shape for k, v in crf.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in tcrf.state_dict().items()}
    crf.load_state_dict(tcrf.state_dict())  # loads as it is
    for name, v in tcrf.state_dict().items():
        assert_close(crf.parameters()[name], v.double().numpy(), what=name)


# ============================================================================================
# Central differences, padding, float32, accumulation
# ============================================================================================


@pytest.mark.parametrize("reduction", ["token_mean", "none"])
def test_gradients_match_central_differences(rng, reduction):
    T, B, K = 5, 3, 4
    crf, e, y, L = make_case(rng, T, B, K, lengths=[5, 2, 4])
    w = rng.uniform(0.5, 1.5, B) if reduction == "none" else 0.9
    crf(e, y, L, reduction)
    crf.zero_grad()
    de = crf.backward(w)
    grads = {k: v.copy() for k, v in crf.grads.items()}

    def loss():
        return float(np.sum(w * crf.forward(e, y, L, reduction)))

    assert_close(de, numeric_grad(loss, e), GC_RTOL, GC_ATOL, "d emissions")
    for name, p in crf.parameters().items():
        assert_close(grads[name], numeric_grad(loss, p), GC_RTOL, GC_ATOL, f"d {name}")


def test_padding_past_the_lengths_changes_nothing(rng):
    T, B, K = 7, 4, 5
    crf, e, y, L = make_case(rng, T, B, K, lengths=[7, 3, 1, 5])
    pad = np.arange(T)[:, None] >= L
    dirty_e, dirty_y = e.copy(), y.copy()
    dirty_e[pad] = [np.nan, np.inf, -1e30, 1e30, 7.0]
    dirty_y[pad] = -100  # an ignore index, out of range: never read
    results = []
    for emissions, tags in ((e, y), (dirty_e, dirty_y)):
        crf.zero_grad()
        nll = crf(emissions, tags, L, "none")
        de = crf.backward(1.0)
        results.append((nll, de, {k: v.copy() for k, v in crf.grads.items()},
                        crf.decode(emissions, L), crf.marginals(emissions, L)))
    (nll0, de0, g0, v0, m0), (nll1, de1, g1, v1, m1) = results
    assert np.array_equal(nll0, nll1) and np.array_equal(de0, de1) and v0 == v1
    assert np.array_equal(m0, m1)
    assert all(np.array_equal(g0[k], g1[k]) for k in NAMES)
    assert not de0[pad].any() and not m0[pad].any()


def test_float32_agrees_with_float64(rng):
    T, B, K = 10, 5, 6
    crf64, e, y, L = make_case(rng, T, B, K, lengths=[10, 3, 8, 1, 6], spread=2.0)
    crf32 = CRF(K, dtype=np.float32, seed=0)
    crf32.load_state_dict(crf64.state_dict())
    e32 = e.astype(np.float32)
    nll32 = crf32(e32, y, L, "mean")
    de32 = crf32.backward(1.0)
    assert de32.dtype == np.float32 and crf32.grads["transitions"].dtype == np.float32
    assert crf32(e32, y, L, "none").dtype == np.float32
    nll64 = crf64(e32.astype(F64), y, L, "mean")
    de64 = crf64.backward(1.0)
    assert_close(nll32, nll64, 1e-5, 1e-5, "nll")
    assert_close(de32, de64, 1e-5, 1e-6, "d emissions")
    for name in NAMES:
        assert_close(crf32.grads[name], crf64.grads[name], 1e-5, 1e-5, f"d {name}")
    assert_close(crf32.marginals(e32, L), crf64.marginals(e32.astype(F64), L), 1e-5, 1e-6)
    assert crf32.decode(e32, L) == crf64.decode(e32.astype(F64), L)


def test_large_scores_stay_finite_in_float32(torch, rng):
    """Scores of 1e3 and more overflow exp() in both dtypes: the log-sum-exps are shifted. A
    float32 score of ~1e4 holds ~1e-3 absolute, so its probabilities are good to ~1e-3."""
    T, B, K = 8, 3, 4
    crf64, e, y, L = make_case(rng, T, B, K, lengths=[8, 5, 2], spread=300.0)
    e *= 1000.0
    crf32 = CRF(K, dtype=np.float32, seed=0)
    crf32.load_state_dict(crf64.state_dict())
    tcrf = torch_crf(torch, crf64)
    llh = tcrf(torch.tensor(e), torch.tensor(y), mask_of(torch, L, T), "none")
    for crf in (crf64, crf32):
        nll = crf(e.astype(crf.dtype), y, L, "none")
        de = crf.backward(1.0)
        assert np.isfinite(nll).all() and np.isfinite(de).all()
        assert_close(nll, -llh.detach().numpy(), 1e-6, 1e-6, f"nll {crf.dtype}")
        m = crf.marginals(e.astype(crf.dtype), L)
        tol = 5e-3 if crf.dtype == np.float32 else 1e-9
        assert_close(m.sum(axis=2), (np.arange(T)[:, None] < L).astype(F64), tol, tol)


def test_gradients_accumulate_until_zero_grad(rng):
    crf, e, y, L = make_case(rng, lengths=[4, 2])
    crf(e, y, L)
    crf.backward()
    once = {k: v.copy() for k, v in crf.grads.items()}
    crf(e, y, L)
    crf.backward()
    for name in NAMES:
        assert_close(crf.grads[name], 2 * once[name], what=name)
    crf.zero_grad(lazy=True)
    crf(e, y, L)
    crf.backward()
    for name in NAMES:
        assert_close(crf.grads[name], once[name], what=f"{name} after a lazy zero_grad")


def test_init_is_seeded_uniform_in_the_dtype():
    a, b = CRF(7, seed=3), CRF(7, seed=3)
    for name in NAMES:
        assert a.parameters()[name].dtype == np.float32
        assert np.array_equal(a.parameters()[name], b.parameters()[name])
        assert np.abs(a.parameters()[name]).max() <= 0.1
    assert a.parameters()["transitions"].shape == (7, 7)
    assert not np.array_equal(CRF(7, seed=4).parameters()["transitions"],
                              a.parameters()["transitions"])
    assert set(a.grads) == set(NAMES) and not any(g.any() for g in a.grads.values())


# ============================================================================================
# Bad inputs
# ============================================================================================

T0, B0, K0 = 4, 2, 3
E0 = np.zeros((T0, B0, K0))
Y0 = np.zeros((T0, B0), np.int64)

BAD = [
    (dict(emissions=np.zeros((T0, K0))), ValueError, r"emissions: expected a 3-D array"),
    (dict(emissions=np.zeros((T0, B0, 4))), ValueError, r"emissions: expected shape .*K=3"),
    (dict(emissions=E0.astype(np.float32)), TypeError, r"emissions: expected dtype float64"),
    (dict(emissions=E0.astype(int)), TypeError, r"emissions: expected dtype float64"),
    (dict(emissions=E0.tolist()), TypeError, r"emissions: expected a numpy array"),
    (dict(emissions=np.zeros((0, B0, K0)), tags=np.zeros((0, B0), np.int64)), ValueError,
     r"emissions: expected at least one step"),
    (dict(emissions=np.where(np.arange(T0)[:, None, None] == 1, np.nan, E0)), ValueError,
     r"emissions: expected finite values within lengths, got nan at index \(1, 0, 0\)"),
    (dict(tags=Y0[:3]), ValueError, r"tags: expected shape \(T, B\) = \(4, 2\), got \(3, 2\)"),
    (dict(tags=Y0.astype(float)), TypeError, r"tags: expected an integer numpy array"),
    (dict(tags=np.where(np.arange(T0)[:, None] == 1, 3, Y0)), ValueError,
     r"tags: expected ids in \[0, 3\) within lengths, got min 0 max 3"),
    (dict(tags=np.where(np.arange(T0)[:, None] == 0, -1, Y0)), ValueError,
     r"tags: expected ids in \[0, 3\) within lengths, got min -1"),
    (dict(lengths=[0, 2]), ValueError, r"lengths: expected values in \[1, 4\]"),
    (dict(lengths=[5, 2]), ValueError, r"lengths: expected values in \[1, 4\]"),
    (dict(lengths=[4]), ValueError, r"lengths: expected one length per sequence, 2 in all"),
    (dict(lengths=[1.5, 2]), TypeError, r"lengths: expected integers"),
    (dict(reduction="avg"), ValueError, r"reduction: expected one of .*got 'avg'"),
]


@pytest.mark.parametrize("change,error,match", BAD)
def test_bad_inputs_raise(change, error, match):
    crf = CRF(K0, dtype=F64, seed=0)
    args = dict(emissions=E0, tags=Y0, lengths=None, reduction="sum") | change
    with pytest.raises(error, match=match):
        crf(**args)
    if "tags" not in change and "reduction" not in change:  # the same checks in the others
        emissions, lengths = args["emissions"], args["lengths"]
        with pytest.raises(error, match=match):
            crf.decode(emissions, lengths)
        with pytest.raises(error, match=match):
            crf.marginals(emissions, lengths)


def test_bad_construction_and_backward_raise():
    with pytest.raises(ValueError, match=r"num_tags: expected a positive integer, got 0"):
        CRF(0)
    with pytest.raises(TypeError, match=r"dtype: expected np.float32 or np.float64"):
        CRF(3, dtype=np.int32)
    crf = CRF(K0, dtype=F64, seed=0)
    with pytest.raises(RuntimeError, match=r"CRF.backward: expected a forward call"):
        crf.backward()
    crf(E0, Y0, reduction="sum")
    with pytest.raises(ValueError, match=r"scale: expected a finite number"):
        crf.backward(np.ones(B0))  # per-sequence scales need reduction="none"
    with pytest.raises(ValueError, match=r"scale: expected a finite number"):
        crf.backward(np.nan)
    crf.backward()  # a rejected scale left the forward's cache in place
    with pytest.raises(RuntimeError, match=r"CRF.backward: expected a forward call"):
        crf.backward()  # one backward per forward
    crf(E0, Y0, reduction="none")
    with pytest.raises(ValueError, match=r"scale: expected a finite number or 2 finite numbers"):
        crf.backward(np.ones(3))
