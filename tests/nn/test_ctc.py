"""CTC: the loss and its gradient against torch (F.ctc_loss of log_softmax(logits), autograd
through both), against central differences and against a brute-force sum over every path; the
decoders against constructed posteriors and a brute-force enumeration of every labelling; bad
inputs raise.

Tolerances against torch: 1e-10 in float64, 1e-5 in float32 (relative, and absolute scaled by
the expected magnitude).
"""

from __future__ import annotations

import itertools
import math
import warnings

import numerics
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numerics import numeric_grad

from rnnlab.nn.ctc import (
    CTCLoss,
    beam_decode,
    best_path_alignment,
    greedy_decode,
    prefix_beam_search,
    sequence_log_prob,
)

F32, F64 = np.float32, np.float64
TOL = {F64: 1e-10, F32: 1e-5}
GC_RTOL, GC_ATOL = 1e-6, 1e-8
REDUCTIONS = ("none", "sum", "mean")
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def assert_close(got, exp, dtype=F64, what=""):
    numerics.assert_close(got, exp, TOL[dtype], TOL[dtype], what)


def torch_ctc(torch, logits, targets, input_lengths, target_lengths, blank=0, reduction="mean",
              zero_infinity=False, scale=1.0):
    """torch's loss and d(scale * loss)/dlogits, the log-softmax inside the autograd graph."""
    x = torch.tensor(logits, requires_grad=True)
    loss = torch.nn.functional.ctc_loss(
        torch.log_softmax(x, dim=2), torch.tensor(targets), torch.tensor(input_lengths),
        torch.tensor(target_lengths), blank=blank, reduction=reduction,
        zero_infinity=zero_infinity)
    if isinstance(scale, np.ndarray):
        loss.backward(torch.tensor(scale, dtype=loss.dtype))
    else:
        (loss * scale).sum().backward()
    return loss.detach().numpy(), x.grad.numpy()


def ours(logits, targets, input_lengths, target_lengths, blank=0, reduction="mean",
         zero_infinity=False, scale=1.0):
    ctc = CTCLoss(blank, reduction, zero_infinity)
    loss = ctc(logits, targets, input_lengths, target_lengths)
    return loss, ctc.backward(scale)


def batch(rng, dtype=F64, blank=0, C=5, T=7):
    """A batch of four: a repeat [a, a, b], an empty target, a single label on a short input
    and three distinct labels; variable input and target lengths; padding filled with junk."""
    labels = [k for k in range(C) if k != blank]  # non-blank ids
    a, b, c = labels[0], labels[1], labels[2]
    targets = np.array([[a, a, b], [7, 7, 7], [c, 9, 9], [c, b, a]])  # junk past the lengths
    target_lengths = np.array([3, 0, 1, 3])
    input_lengths = np.array([T, 5, 2, T - 1])
    logits = (1.5 * rng.standard_normal((T, 4, C))).astype(dtype)
    return logits, targets, input_lengths, target_lengths


def concatenated(targets, target_lengths):
    return np.concatenate([row[:n] for row, n in zip(targets, target_lengths, strict=True)])


# ============================================================================================
# The loss against torch
# ============================================================================================


@pytest.mark.parametrize("fmt", ["padded", "concatenated"])
@pytest.mark.parametrize("blank", ["first", "last"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [F64, F32])
def test_matches_torch(torch, rng, dtype, reduction, blank, fmt):
    C = 5
    blank = 0 if blank == "first" else C - 1
    logits, targets, Tb, Sb = batch(rng, dtype, blank, C)
    if fmt == "concatenated":
        targets = concatenated(targets, Sb)
    scale = rng.standard_normal(4) if reduction == "none" else 0.7
    loss, grad = ours(logits, targets, Tb, Sb, blank, reduction, scale=scale)
    exp_loss, exp_grad = torch_ctc(torch, logits, targets, Tb, Sb, blank, reduction,
                                   scale=scale)
    if reduction == "none":
        assert loss.dtype == dtype and loss.shape == (4,)
    else:
        assert isinstance(loss, float)
    assert grad.dtype == dtype and grad.shape == logits.shape
    assert_close(loss, exp_loss, dtype, "loss")
    assert_close(grad, exp_grad, dtype, "dlogits")
    for b, n in enumerate(Tb):
        assert np.all(grad[n:, b] == 0)  # nothing past an input length


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("zero_infinity", [False, True])
def test_impossible_alignment_matches_torch(torch, rng, reduction, zero_infinity):
    """[1, 1, 2] needs 4 frames (the repeat needs a blank between): 3 give p = 0. torch gives
    an infinite loss and a NaN gradient for it, or 0 and 0 with zero_infinity."""
    logits = rng.standard_normal((4, 2, 4))
    targets, Tb, Sb = np.array([[1, 1, 2], [3, 1, 0]]), np.array([3, 4]), np.array([3, 2])
    loss, grad = ours(logits, targets, Tb, Sb, 0, reduction, zero_infinity)
    exp_loss, exp_grad = torch_ctc(torch, logits, targets, Tb, Sb, 0, reduction, zero_infinity)
    np.testing.assert_allclose(loss, exp_loss, rtol=1e-10)  # inf == inf; finite to 1e-10
    np.testing.assert_allclose(grad, exp_grad, rtol=1e-10, atol=1e-10)  # NaN where NaN
    if zero_infinity:
        assert np.all(grad[:, 0] == 0) and np.isfinite(loss).all()
    else:
        assert np.isinf(np.asarray(loss)).any() and np.isnan(grad[:3, 0]).all()
    assert np.all(grad[3, 0] == 0) and np.isfinite(grad[:, 1]).all()  # the rest unaffected


def test_enough_frames_is_finite(rng):
    """The required length is S + the number of adjacent repeats: exactly that is possible."""
    logits = rng.standard_normal((4, 1, 3))
    for T, finite in ((4, True), (3, False)):
        loss = CTCLoss(reduction="sum")(logits, np.array([[1, 1, 2]]), [T], [3])
        assert math.isfinite(loss) == finite


def test_zero_input_length_matches_torch(torch, rng):
    logits = rng.standard_normal((3, 2, 3))
    args = (logits, np.array([[1], [2]]), np.array([0, 0]), np.array([0, 1]))
    loss, grad = ours(*args, reduction="none")
    exp_loss, exp_grad = torch_ctc(torch, *args, reduction="none")
    np.testing.assert_array_equal(loss, [0.0, np.inf])
    np.testing.assert_array_equal(loss, exp_loss)
    np.testing.assert_array_equal(grad, exp_grad)


@st.composite
def cases(draw):
    T, B, C = draw(st.integers(1, 6)), draw(st.integers(1, 3)), draw(st.integers(2, 5))
    blank = draw(st.integers(0, C - 1))
    Tb = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
    Sb = [draw(st.integers(0, 4)) for _ in range(B)]
    ids = [k for k in range(C) if k != blank]
    targets = [draw(st.lists(st.sampled_from(ids), min_size=n, max_size=n)) for n in Sb]
    return dict(T=T, C=C, blank=blank, Tb=Tb, Sb=Sb, targets=targets,
                dtype=draw(st.sampled_from([F64, F32])),
                reduction=draw(st.sampled_from(REDUCTIONS)),
                zero_infinity=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@SETTINGS
@given(case=cases())
def test_property_matches_torch(torch, case):
    """Random sizes, blanks, lengths (impossible ones included) and labels, concatenated
    targets; NaN gradients (impossible without zero_infinity) must be where torch has them."""
    rng = np.random.default_rng(case["seed"])
    dtype, B = case["dtype"], len(case["Tb"])
    logits = (2 * rng.standard_normal((case["T"], B, case["C"]))).astype(dtype)
    targets = np.array(sum(case["targets"], []), np.int64)
    args = (logits, targets, np.array(case["Tb"]), np.array(case["Sb"]), case["blank"],
            case["reduction"], case["zero_infinity"])
    loss, grad = ours(*args)
    exp_loss, exp_grad = torch_ctc(torch, *args)
    tol = TOL[dtype]
    np.testing.assert_allclose(loss, exp_loss, rtol=tol, atol=tol)
    np.testing.assert_allclose(grad, exp_grad, rtol=tol, atol=tol)


# ============================================================================================
# The loss against first principles
# ============================================================================================


def log_softmax(x):
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def collapse(path, blank):
    out = [k for i, k in enumerate(path) if i == 0 or k != path[i - 1]]
    return tuple(k for k in out if k != blank)


def labelling_probs(log_y, blank):
    """{labelling: p(labelling | x)} summed over every one of the C^T paths."""
    T, C = log_y.shape
    probs = {}
    for path in itertools.product(range(C), repeat=T):
        lab = collapse(path, blank)
        probs[lab] = probs.get(lab, 0.0) + math.exp(sum(log_y[t, k] for t, k in enumerate(path)))
    return probs


@pytest.mark.parametrize("target", [[1, 1], [1, 2], [2, 1, 2], [2], [], [1, 1, 1]])
@pytest.mark.parametrize("blank", [0, 2])
def test_loss_is_minus_log_of_the_summed_paths(rng, target, blank):
    """All 3^5 paths of 5 frames; [1, 1, 1] needs all 5 (a blank between the repeats)."""
    T, C = 5, 3
    target = [k if k != blank else 0 for k in target]  # relabel so no label is the blank
    logits = 1.5 * rng.standard_normal((T, 1, C))
    probs = labelling_probs(log_softmax(logits[:, 0]), blank)
    loss = CTCLoss(blank, "sum")(logits, np.array([target], np.int64).reshape(1, -1), [T],
                                 [len(target)])
    assert loss == pytest.approx(-math.log(probs[tuple(target)]), rel=1e-12)
    assert sum(probs.values()) == pytest.approx(1.0, rel=1e-12)  # the oracle itself


def test_empty_target_is_all_blanks(rng):
    logits = rng.standard_normal((6, 2, 4))
    loss = CTCLoss(blank=3, reduction="none")(logits, np.zeros((2, 0), np.int64), [6, 4],
                                              [0, 0])
    log_y = log_softmax(logits)
    np.testing.assert_allclose(loss, [-log_y[:6, 0, 3].sum(), -log_y[:4, 1, 3].sum()],
                               rtol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradient_matches_central_differences(rng, reduction):
    logits, targets, Tb, Sb = batch(rng, F64, blank=1, C=4, T=5)
    scale = np.array([0.5, -1.0, 2.0, 1.5]) if reduction == "none" else 1.3

    def f():
        loss = CTCLoss(1, reduction)(logits, targets, Tb, Sb)
        return float(np.sum(loss * scale))

    ctc = CTCLoss(1, reduction)
    ctc(logits, targets, Tb, Sb)
    grad = ctc.backward(scale)
    numerics.assert_close(grad, numeric_grad(f, logits), GC_RTOL, GC_ATOL, "dlogits")


def test_padding_past_the_lengths_changes_nothing(rng):
    """NaN logits past each input length: the same loss and gradient, no warning."""
    logits, targets, Tb, Sb = batch(rng)
    loss, grad = ours(logits, targets, Tb, Sb, reduction="none")
    dirty = logits.copy()
    for b, n in enumerate(Tb):
        dirty[n:, b] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a warning from the NaN padding
        loss2, grad2 = ours(dirty, targets, Tb, Sb, reduction="none")
    np.testing.assert_array_equal(loss2, loss)
    np.testing.assert_array_equal(grad2, grad)


def test_backward_scale_is_linear_and_once_per_forward(rng):
    logits, targets, Tb, Sb = batch(rng)
    ctc = CTCLoss()
    with pytest.raises(RuntimeError, match="expected a forward call before backward"):
        ctc.backward()
    ctc(logits, targets, Tb, Sb)
    g1 = ctc.backward()
    with pytest.raises(RuntimeError, match="one backward per forward"):
        ctc.backward()
    ctc(logits, targets, Tb, Sb)
    assert_close(ctc.backward(-3.0), -3.0 * g1, what="scale")


# ============================================================================================
# Decoders
# ============================================================================================


def one_hot_scores(paths, C, blank_first=True):
    """Log-probabilities (T, B, C) whose best path is ``paths[:, b]`` (0.9 on it)."""
    T, B = paths.shape
    p = np.full((T, B, C), 0.1 / (C - 1))
    p[np.arange(T)[:, None], np.arange(B), paths] = 0.9
    return np.log(p)


def test_greedy_merges_repeats_and_drops_blanks():
    paths = np.array([[1, 1, 0, 1, 2, 2, 0, 0],
                      [0, 3, 3, 3, 0, 0, 3, 1]]).T  # (T, B)
    scores = one_hot_scores(paths, 4)
    assert greedy_decode(scores, [8, 8]) == [[1, 1, 2], [3, 3, 1]]
    assert best_path_alignment(scores, [8, 8]) == [([1, 1, 2], [0, 3, 4]), ([3, 3, 1], [1, 6, 7])]
    assert greedy_decode(scores, [3, 0]) == [[1], []]  # only the frames within the lengths
    assert greedy_decode(scores) == greedy_decode(scores, [8, 8])  # None: every frame
    # blank = 3: the 0s are labels now and the 3s blanks
    assert best_path_alignment(scores, blank=3) == [([1, 0, 1, 2, 0], [0, 2, 3, 4, 6]),
                                                     ([0, 0, 1], [0, 4, 7])]


def brute_force_best(log_y, blank):
    probs = labelling_probs(log_y, blank)
    best = max(probs, key=probs.get)
    return probs, list(best), math.log(probs[best])


@pytest.mark.parametrize("seed", range(5))
def test_exhaustive_beam_is_exact(seed):
    """T = 4, C = 3: at most 1 + 2 + 4 + 8 + 16 = 31 prefixes, so a beam of 32 prunes nothing:
    the best labelling and every log probability are the brute-force ones."""
    rng = np.random.default_rng(seed)
    T, B, C, blank = 4, 2, 3, seed % 3
    logits = 2 * rng.standard_normal((T, B, C))
    ranked = prefix_beam_search(logits, [T, T - 1], beam=32, blank=blank)
    best = beam_decode(logits, [T, T - 1], beam=32, blank=blank)
    for b, n in enumerate([T, T - 1]):
        log_y = log_softmax(logits[:n, b])
        probs, labels, log_p = brute_force_best(log_y, blank)
        assert best[b][0] == labels
        assert best[b][1] == pytest.approx(log_p, rel=1e-12)
        assert best[b] == ranked[b][0]
        got = {tuple(lab): lp for lab, lp in ranked[b]}
        assert got.keys() == {k for k, p in probs.items() if p > 0}
        for lab, lp in got.items():
            assert lp == pytest.approx(math.log(probs[lab]), rel=1e-12)
            assert lp == pytest.approx(sequence_log_prob(log_y, list(lab), blank), rel=1e-12)


def test_beam_of_one_on_peaked_posteriors():
    """With one prefix kept and a clear best path, the beam finds the greedy labels; its
    log probability sums fewer paths than the exact one, so it is a lower bound."""
    paths = np.array([[0, 2, 2, 0, 2, 1, 1, 0]]).T
    scores = one_hot_scores(paths, 3)
    (labels, log_p), = beam_decode(scores, beam=1)
    assert labels == greedy_decode(scores)[0] == [2, 2, 1]
    exact = sequence_log_prob(scores[:, 0], labels)
    assert log_p < exact  # the pruned prefixes' paths are missing
    assert beam_decode(scores, beam=8)[0][1] <= exact + 1e-12
    # 1 + 2 + ... + 2^8 = 511 prefixes of at most 8 labels from 2: 512 prune nothing
    assert beam_decode(scores, beam=512)[0][1] == pytest.approx(exact, rel=1e-12)


def test_beam_accepts_logits_or_log_probs(rng):
    logits = rng.standard_normal((5, 2, 4))
    assert beam_decode(logits, beam=4)[0][0] == beam_decode(log_softmax(logits), beam=4)[0][0]
    lp_a = beam_decode(logits, beam=4)[1][1]
    assert lp_a == pytest.approx(beam_decode(log_softmax(logits), beam=4)[1][1], rel=1e-12)


# ============================================================================================
# Bad inputs
# ============================================================================================


def good():
    return np.zeros((5, 2, 4)), np.array([[1, 2], [3, 0]]), np.array([5, 4]), np.array([2, 1])


@pytest.mark.parametrize(
    "change, exc, match",
    [
        (dict(targets=np.array([[1, 0], [3, 0]])), ValueError,
         r"targets: expected labels other than blank=0 within target_lengths, got blank at "
         r"sequence 0, position 1"),
        (dict(targets=np.array([[1, 4], [3, 0]])), ValueError,
         r"targets: expected ids in \[0, C=4\) within target_lengths, got min 1 max 4"),
        (dict(targets=np.array([[1, 2], [-1, 0]])), ValueError, r"targets: expected ids in"),
        (dict(targets=np.array([[1.0, 2.0], [3.0, 0.0]])), TypeError,
         "targets: expected an integer numpy array, got float64"),
        (dict(targets=np.array([[1, 2, 3]])), ValueError,
         r"targets: expected padded shape \(B=2, S\), got \(1, 3\)"),
        (dict(targets=np.array([1, 2, 3, 1])), ValueError,
         r"targets: expected a concatenation of sum\(target_lengths\) = 3 labels, got shape "
         r"\(4,\)"),
        (dict(targets=np.ones((2, 2, 1), np.int64)), ValueError, "targets: expected a 2-D"),
        (dict(logits=np.zeros((5, 2))), ValueError,
         r"logits: expected a 3-D array \(T, B, C\) with T, B, C >= 1, got shape \(5, 2\)"),
        (dict(logits=np.zeros((0, 2, 4))), ValueError, "logits: expected a 3-D array"),
        (dict(logits=np.zeros((5, 2, 4), np.int64)), TypeError,
         "logits: expected a float32 or float64 numpy array, got int64"),
        (dict(logits=np.zeros((5, 3, 4))), ValueError,
         r"input_lengths: expected shape \(B,\) = \(3,\), got \(2,\)"),
        (dict(input_lengths=np.array([5, -1])), ValueError,
         r"input_lengths: expected values in \[0, T=5\], got min -1 max 5"),
        (dict(input_lengths=np.array([6, 4])), ValueError,
         r"input_lengths: expected values in \[0, T=5\], got min 4 max 6"),
        (dict(input_lengths=np.array([5, 4, 3])), ValueError,
         r"input_lengths: expected shape \(B,\) = \(2,\), got \(3,\)"),
        (dict(input_lengths=np.array([5.0, 4.0])), TypeError,
         "input_lengths: expected integers, got dtype float64"),
        (dict(target_lengths=np.array([3, 1])), ValueError,
         r"target_lengths: expected values in \[0, S=2\], got min 1 max 3"),
        (dict(target_lengths=np.array([2, -1])), ValueError,
         r"target_lengths: expected values in \[0, S=2\], got min -1"),
    ],
)
def test_bad_inputs(change, exc, match):
    logits, targets, Tb, Sb = good()
    args = dict(logits=logits, targets=targets, input_lengths=Tb, target_lengths=Sb)
    args.update(change)
    with pytest.raises(exc, match=match):
        CTCLoss()(**args)


def test_bad_settings():
    with pytest.raises(ValueError, match=r"blank: expected an integer in \[0, C=4\), got 4"):
        CTCLoss(blank=4)(*good())
    with pytest.raises(ValueError, match="blank: expected an integer >= 0, got -1"):
        CTCLoss(blank=-1)
    with pytest.raises(ValueError, match="reduction: expected one of .*got 'avg'"):
        CTCLoss(reduction="avg")
    with pytest.raises(TypeError, match="zero_infinity: expected a bool, got int"):
        CTCLoss(zero_infinity=1)
    ctc = CTCLoss(reduction="sum")
    ctc(*good())
    with pytest.raises(ValueError, match="scale: expected a finite number"):
        ctc.backward(np.ones(2))
    ctc = CTCLoss(reduction="none")
    ctc(*good())
    with pytest.raises(ValueError, match=r"scale: expected a finite number or 2 finite numbers"):
        ctc.backward(np.ones(3))


def test_decoder_bad_inputs():
    scores = np.zeros((4, 2, 3))
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, T=4\], got min 0 "
                                         r"max 5"):
        greedy_decode(scores, [5, 0])
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, T=4\], got min -1"):
        beam_decode(scores, [-1, 2])
    with pytest.raises(ValueError, match=r"scores: expected a 3-D array \(T, B, C\)"):
        greedy_decode(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"blank: expected an integer in \[0, C=3\), got 3"):
        greedy_decode(scores, blank=3)
    with pytest.raises(ValueError, match="beam: expected a positive integer, got 0"):
        beam_decode(scores, beam=0)
    with pytest.raises(ValueError, match="targets: expected labels other than blank=0"):
        sequence_log_prob(scores[:, 0], [1, 0])
