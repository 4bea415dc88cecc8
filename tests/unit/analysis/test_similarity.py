"""Mean CCA and PWCCA against values known from their definitions."""

import math

import numpy as np
import pytest

from espnet_delta.analysis.similarity import cca, mean_cca, pwcca

N = 5000


def rng(seed=0):
    return np.random.default_rng(seed)


def test_invertible_linear_map_gives_one():
    """CCA is invariant to invertible affine maps: every canonical correlation of X and
    X M + b is 1. X is isotropic (10 dims of ~10 % variance each), so the 99 % cut keeps
    all of X; whatever part of XM's spectrum the cut keeps lies in span(X), so every
    singular value of Qx^T Qy is 1 (up to rounding: tolerance 1e-6)."""
    r = rng(1)
    x = r.standard_normal((N, 10))
    y = x @ r.standard_normal((10, 10)) + 3.0
    res = cca(x, y)
    assert res.kept_x == 10
    assert np.all(np.abs(res.rho - 1.0) < 1e-6)
    assert abs(res.mean_cca - 1.0) < 1e-6 and abs(res.pwcca - 1.0) < 1e-6
    assert abs(mean_cca(y, x) - 1.0) < 1e-6


def test_independent_noise_is_near_zero():
    """Independent Gaussian X [N, d1], Y [N, d2]: the squared canonical correlations follow
    the Wachter law, whose upper edge gives a largest correlation of about
    sqrt(d1/N) + sqrt(d2/N) = 2 sqrt(10/5000) = 0.089. The mean lies below the largest."""
    r = rng(2)
    edge = math.sqrt(10 / N) + math.sqrt(10 / N)
    res = cca(r.standard_normal((N, 10)), r.standard_normal((N, 10)))
    assert res.mean_cca < edge
    assert res.pwcca < edge  # a convex combination of correlations that are all near the edge or below


def test_pwcca_recovers_a_planted_shared_subspace():
    """X = [10 S, A], Y = [5 S, B] R + 0.1 E with S [N, 3] shared, A, B [N, 7] private, R orthogonal.

    * exactly k = 3 correlations exceed 0.9: S is recovered from Y up to noise of variance
      0.01 against signal 25 (rho ~ 0.9998); the private parts are independent, so the rest
      are below the noise edge sqrt(10/N) + sqrt(10/N) = 0.089 (previous test).
    * weights: a shared canonical variate h = sum c_i s_i/|s_i| (unit c) projects on X's
      columns 10 S with sum_i |h^T 10 s_i| ~ 10 sqrt(N) sum|c_i| >= 10 sqrt(N); a private
      variate h in span(A) has sum_j |h^T a_j| <= sqrt(7) ||A^T h|| ~ sqrt(7) sqrt(N). With
      m kept correlations: PWCCA >= 0.9 * 30 / (30 + (m - 3) sqrt(7)) while
      mean CCA <= (3 + (m - 3) 0.089) / m.
    """
    r = rng(3)
    s, a, b = r.standard_normal((N, 3)), r.standard_normal((N, 7)), r.standard_normal((N, 7))
    rot, _ = np.linalg.qr(r.standard_normal((10, 10)))
    x = np.hstack([10 * s, a])
    y = np.hstack([5 * s, b]) @ rot + 0.1 * r.standard_normal((N, 10))
    res = cca(x, y)
    edge = 2 * math.sqrt(10 / N)
    assert int(np.sum(res.rho > 0.9)) == 3
    assert np.all(res.rho[3:] < edge)
    m = len(res.rho)
    assert m >= 4
    assert res.mean_cca <= (3 + (m - 3) * edge) / m
    assert res.pwcca >= 0.9 * 30 / (30 + (m - 3) * math.sqrt(7))
    assert res.pwcca > res.mean_cca
    assert abs(res.weights.sum() - 1.0) < 1e-12 and np.all(res.weights >= 0)


def test_pwcca_weights_come_from_x():
    """Swapping the sides changes PWCCA (weights from the first argument) but not mean CCA."""
    r = rng(4)
    s = r.standard_normal((N, 2))
    x = np.hstack([10 * s, r.standard_normal((N, 6))])
    y = np.hstack([s, 3 * r.standard_normal((N, 6))])  # shared part: 2 of 56 variance units, above the 1 % cut
    assert abs(mean_cca(x, y) - mean_cca(y, x)) < 1e-9
    assert pwcca(x, y) > pwcca(y, x) + 0.2  # x's variance sits in the shared part, y's does not


@pytest.mark.parametrize(
    "x, y",
    [
        # duplicated columns: rank 5 out of 10
        (lambda r: np.repeat(r.standard_normal((200, 5)), 2, axis=1), lambda r: r.standard_normal((200, 4))),
        # more dimensions than frames: rank <= N - 1 = 19 after centring
        (lambda r: r.standard_normal((20, 50)), lambda r: r.standard_normal((20, 30))),
        # a constant column next to informative ones
        (lambda r: np.hstack([np.full((100, 1), 7.3), r.standard_normal((100, 3))]),
         lambda r: r.standard_normal((100, 3))),
    ],
)
def test_rank_deficient_inputs_do_not_crash(x, y):
    r = rng(5)
    res = cca(x(r), y(r))
    assert np.all((res.rho >= 0) & (res.rho <= 1))
    assert 0.0 <= res.mean_cca <= 1.0 and 0.0 <= res.pwcca <= 1.0 + 1e-12


def test_more_dims_than_frames_is_trivially_one():
    """With d >= N - 1 both centred sides span the whole (N - 1)-dim centred frame space:
    every canonical correlation is 1 (why the analysis samples many frames per dim)."""
    r = rng(6)
    assert abs(mean_cca(r.standard_normal((20, 50)), r.standard_normal((20, 30))) - 1.0) < 1e-9


def test_duplicated_columns_keep_the_rank_of_the_distinct_ones():
    r = rng(7)
    base = r.standard_normal((300, 4))
    res = cca(np.repeat(base, 3, axis=1), base)
    assert res.kept_x == res.kept_y == 4 and np.all(np.abs(res.rho - 1) < 1e-9)


@pytest.mark.parametrize("bad", [np.zeros((50, 4)), np.full((50, 4), 0.1)])
def test_input_without_variance_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="X has no variance"):
        cca(bad, rng().standard_normal((50, 3)))


def test_frame_count_errors():
    r = rng(8)
    with pytest.raises(ValueError, match="at least 2 frames"):
        cca(r.standard_normal((1, 3)), r.standard_normal((1, 3)))
    with pytest.raises(ValueError, match="same frames: X has 10 rows, Y has 11"):
        cca(r.standard_normal((10, 3)), r.standard_normal((11, 3)))
    with pytest.raises(ValueError, match="2-D"):
        cca(r.standard_normal(10), r.standard_normal((10, 2)))
    with pytest.raises(ValueError, match="NaN"):
        cca(np.full((10, 2), np.nan), r.standard_normal((10, 2)))
