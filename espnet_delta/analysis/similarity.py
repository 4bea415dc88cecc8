"""Mean CCA similarity and projection-weighted CCA (PWCCA) of two representations.

X ``[N, d1]`` and Y ``[N, d2]`` hold the same N frames (rows) as seen by two models or
layers (columns = neurons). Following SVCCA (Raghu et al. 2017) and PWCCA (Morcos
et al. 2018):

1. **Centre** each column (float64).
2. **SVD reduction**: ``Xc = U S V^T`` (economy SVD); keep the fewest leading
   directions whose squared singular values reach ``keep_variance`` (default 99 %) of
   the total variance, and never a direction whose singular value is numerically
   zero (``s_i <= max(N, d) * eps * max(s_0, ||X||_F)``: the uncentred norm bounds
   the rounding error of centring, so a constant column is zero, not noise).
   ``Qx = U_k`` is an orthonormal basis of the kept subspace. Duplicated columns
   or ``d > N`` only lower the kept rank; an input without any variance (constant
   or all zero) raises :class:`ValueError`: its similarity is undefined.
3. **CCA**: the canonical correlations are the singular values of ``Qx^T Qy``
   (Bjoerck & Golub 1973), ``rho_1 >= ... >= rho_m``, ``m = min(kx, ky)``, clipped to
   [0, 1]. With the SVD ``Qx^T Qy = A diag(rho) B^T`` the canonical variates of X
   are the orthonormal columns ``h_i = Qx a_i`` (unit vectors in frame space).
4. **mean CCA** = ``mean(rho)``.
5. **PWCCA** = ``sum_i alpha_i rho_i`` with ``alpha_i ∝ sum_j |<h_i, x_j>|`` over
   the centred columns x_j of X, normalised to sum 1: a canonical direction counts
   as much as X's activations project onto it, so directions that carry little of
   X's signal (often noise, correlated by chance) count little.

Asymmetry: PWCCA weights come from X (``pwcca(X, Y) != pwcca(Y, X)`` in general);
the reference implementation instead weights by whichever side has fewer neurons
and projects the uncentred activations. Here the caller chooses the side (the
layer-wise analysis passes the first-named representation: pre-trained for
similarity(pt, ft), fine-tuned for similarity(ft, delta)) and the projection uses
centred columns, so adding a constant to X changes nothing. Mean CCA is symmetric and invariant to
invertible linear maps of either side (up to the 99 % cut).

Bias: with few frames per dimension CCA finds spurious correlations (independent
data has a largest canonical correlation near ``sqrt(d1/N) + sqrt(d2/N)``); a
warning is logged when ``N < 10 * max(kx, ky)``.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

KEEP_VARIANCE = 0.99


@dataclasses.dataclass(frozen=True)
class CCAResult:
    """Canonical correlations (descending) and X's PWCCA weights; kept dimensions."""

    rho: np.ndarray
    weights: np.ndarray
    kept_x: int
    kept_y: int

    @property
    def mean_cca(self) -> float:
        return float(np.mean(self.rho))

    @property
    def pwcca(self) -> float:
        return float(np.dot(self.weights, self.rho))


@dataclasses.dataclass(frozen=True)
class Reduced:
    """One side after step 2: centred data ``[N, d]`` and an orthonormal basis ``[N, k]``."""

    centred: np.ndarray
    basis: np.ndarray

    @property
    def kept(self) -> int:
        return self.basis.shape[1]


def _as_matrix(a, name: str) -> np.ndarray:
    x = np.asarray(a, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D [frames, dims] array, got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"{name}: CCA needs at least 2 frames, got {x.shape[0]}")
    if x.shape[1] < 1:
        raise ValueError(f"{name}: has no columns")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return x


def reduce_svd(X, name: str = "X", keep_variance: float = KEEP_VARIANCE) -> Reduced:
    """Centre ``X`` and keep its leading subspace (module docstring, step 2).

    Exposed so that a caller comparing one representation with several others
    reduces it once.
    """
    if not 0.0 < keep_variance <= 1.0:
        raise ValueError(f"keep_variance={keep_variance} must be in (0, 1]")
    x = _as_matrix(X, name)
    xc = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    tol = max(x.shape) * np.finfo(np.float64).eps * max(float(s[0]), float(np.linalg.norm(x)))
    nonzero = int(np.sum(s > tol))
    if nonzero == 0:
        raise ValueError(f"{name} has no variance (constant or all-zero columns): CCA similarity is undefined")
    energy = s[:nonzero] ** 2
    cumulative = np.cumsum(energy) / energy.sum()
    # fewest directions reaching keep_variance (the slack absorbs rounding of the cumulative sum)
    k = min(int(np.searchsorted(cumulative, keep_variance - 1e-12)) + 1, nonzero)
    return Reduced(centred=xc, basis=u[:, :k])


def cca_reduced(rx: Reduced, ry: Reduced) -> CCAResult:
    """Steps 3-5 on two reduced sides (same frames)."""
    n = rx.centred.shape[0]
    if n != ry.centred.shape[0]:
        raise ValueError(f"X and Y must hold the same frames: X has {n} rows, Y has {ry.centred.shape[0]}")
    kx, ky = rx.kept, ry.kept
    if n < 10 * max(kx, ky):
        logging.warning(
            "CCA on %d frames for %d/%d kept dimensions: fewer than 10 frames per dimension biases "
            "the correlations upwards", n, kx, ky,
        )
    a, rho, _ = np.linalg.svd(rx.basis.T @ ry.basis, full_matrices=False)
    m = min(kx, ky)
    rho = np.clip(rho[:m], 0.0, 1.0)
    variates = rx.basis @ a[:, :m]  # [N, m] orthonormal canonical variates of X
    projection = np.abs(variates.T @ rx.centred).sum(axis=1)  # sum_j |<h_i, x_j>|
    # > 0: the variates lie in X's column space, so some column projects onto them
    weights = projection / projection.sum()
    return CCAResult(rho=rho, weights=weights, kept_x=kx, kept_y=ky)


def cca(X, Y, keep_variance: float = KEEP_VARIANCE) -> CCAResult:
    """Canonical correlations of X ``[N, d1]`` and Y ``[N, d2]`` and X's PWCCA weights."""
    x = _as_matrix(X, "X")
    y = _as_matrix(Y, "Y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"X and Y must hold the same frames: X has {x.shape[0]} rows, Y has {y.shape[0]}")
    return cca_reduced(reduce_svd(x, "X", keep_variance), reduce_svd(y, "Y", keep_variance))


def mean_cca(X, Y, keep_variance: float = KEEP_VARIANCE) -> float:
    """Mean canonical correlation (symmetric)."""
    return cca(X, Y, keep_variance).mean_cca


def pwcca(X, Y, keep_variance: float = KEEP_VARIANCE) -> float:
    """Projection-weighted CCA with the weights taken from X."""
    return cca(X, Y, keep_variance).pwcca
