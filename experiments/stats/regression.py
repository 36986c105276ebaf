"""CUPED++: Lin's interacted regression adjustment from sufficient statistics.

Several pre-exposure covariates (GMV, orders, sessions before exposure) and
post-stratification on assignment attributes (age band, province, platform)
in one estimator: per comparison, each arm's outcome is regressed on the
covariates and the strata dummies *separately* (the fully interacted design
``y ~ 1 + T + Z + T·Z`` with ``Z`` centred at the two arms' pooled mean), and
the effect is the difference of the two arms' predictions at that pooled
mean. Lin (2013) shows this never hurts asymptotically, also under unequal
allocation, which the pooled-slope CUPED does not promise.

Input (what the SQL pipeline returns in one aggregate, ``GROUP BY arm,
stratum columns``): per arm and stratum cell, ``n``, ``Σv`` and ``Σv·vᵀ`` for
``v = (outcomes…, covariates…)``: the outcome is one column for a mean or a
proportion and two (numerator, denominator) for a ratio metric. From those
the estimate is exact (it equals statsmodels' OLS coefficient). The standard
error is HC2 with each row's leverage replaced by the average leverage of its
arm × stratum cell: exact HC2 when the design has strata only (every row of a
cell has the same leverage), within a small documented distance of HC2 with
continuous covariates, whose per-row leverages no finite set of sums carries
(docs/statistics.md, "CUPED++").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from experiments.stats.statistics import (
    InsufficientDataError,
    _count,
    _finite,
    _optional_finite,
    centred_second_moment,
)

# Relative size under which an eigenvalue of the (scaled) covariate scatter is
# rounding noise: the direction is treated as constant (collinear covariates,
# or a covariate constant within the arm), as statsmodels' pinv does.
_RANK_TOLERANCE = 1e-10
# Relative size under which a residual sum of squares is rounding noise (an exact fit).
_RESIDUAL_TOLERANCE = 1e-12


def _triangle_size(q: int) -> int:
    return q * (q + 1) // 2


@functools.lru_cache(maxsize=32)
def _triangle_positions(q: int) -> np.ndarray:
    """For each entry of a q × q matrix, its position in the row-major upper triangle."""
    positions = np.empty((q, q), dtype=np.intp)
    rows, columns = np.triu_indices(q)
    positions[rows, columns] = np.arange(rows.size)
    positions[columns, rows] = np.arange(rows.size)
    return positions.ravel()


@dataclass(frozen=True, slots=True)
class CellMoments:
    """Raw sums over the subjects of one arm in one stratum cell.

    ``sums[j] = Σ v_j`` and ``cross_products`` = ``Σ v_j·v_l`` for ``j ≤ l`` in
    row-major order of the upper triangle (``(0,0), (0,1), …, (0,q−1), (1,1), …``),
    for ``v = (outcomes…, covariates…)``: what ``SUM(a * b)`` returns in SQL.
    """

    n: int
    sums: tuple[float, ...]
    cross_products: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", _count(self.n, "n"))
        object.__setattr__(self, "sums", tuple(_finite(value, "sums") for value in self.sums))
        object.__setattr__(
            self,
            "cross_products",
            tuple(_finite(value, "cross_products") for value in self.cross_products),
        )
        q = len(self.sums)
        if q == 0:
            raise ValueError("CellMoments: sums is empty")
        if len(self.cross_products) != _triangle_size(q):
            raise ValueError(
                f"CellMoments: {q} sums need {_triangle_size(q)} cross-products "
                f"(the upper triangle of Σv·vᵀ), got {len(self.cross_products)}"
            )

    def matrix(self) -> np.ndarray:
        """``Σ v·vᵀ`` as a full symmetric matrix."""
        q = len(self.sums)
        return np.asarray(self.cross_products)[_triangle_positions(q)].reshape(q, q)


@dataclass(frozen=True, slots=True)
class LinAdjustedStatistic:
    """One arm's metric for CUPED++ (Lin's interacted regression adjustment).

    ``outcomes`` names the metric column (mean, proportion) or the numerator
    and denominator columns (ratio metric); ``covariates`` the pre-exposure
    columns (possibly none); ``strata`` the assignment attributes to
    post-stratify on (possibly none). ``cells`` maps each stratum cell (one
    level per stratum column, ``()`` without strata) to the sums of its
    subjects in this arm; cells without subjects may be left out. ``cap`` is
    the metric's cap, as for ``SampleMeanStatistic``.
    """

    outcomes: tuple[str, ...]
    covariates: tuple[str, ...]
    strata: tuple[str, ...]
    cells: Mapping[tuple[str, ...], CellMoments]
    cap: float | None = None
    _n: int = field(default=0, init=False, repr=False, compare=False)
    _arrays: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        setter = object.__setattr__
        for name in ("outcomes", "covariates", "strata"):
            values = getattr(self, name)
            if isinstance(values, str) or not isinstance(values, Sequence):
                raise ValueError(f"LinAdjustedStatistic: {name} must be a sequence of column names")
            values = tuple(values)
            if any(not isinstance(value, str) or not value for value in values):
                raise ValueError(f"LinAdjustedStatistic: {name} must be non-empty strings")
            if len(set(values)) != len(values):
                raise ValueError(f"LinAdjustedStatistic: {name} repeats a column: {list(values)}")
            setter(self, name, values)
        if len(self.outcomes) not in (1, 2):
            raise ValueError(
                "LinAdjustedStatistic: outcomes is one column (mean, proportion) or two "
                f"(ratio numerator, denominator), got {list(self.outcomes)}"
            )
        clash = set(self.outcomes) & set(self.covariates)
        if clash:
            raise ValueError(
                f"LinAdjustedStatistic: {sorted(clash)} are both outcome and covariate"
            )
        if not isinstance(self.cells, Mapping) or not self.cells:
            raise ValueError("LinAdjustedStatistic: cells must be a non-empty mapping")
        q = len(self.outcomes) + len(self.covariates)
        keys, counts, sums, triangles = [], [], [], []
        for key, cell in self.cells.items():
            key = tuple(key) if isinstance(key, tuple | list) else (key,)
            if len(key) != len(self.strata):
                raise ValueError(
                    f"LinAdjustedStatistic: cell {key!r} needs one level per stratum column "
                    f"{list(self.strata)}"
                )
            if not isinstance(cell, CellMoments):
                raise ValueError(f"LinAdjustedStatistic: cell {key!r} is not a CellMoments")
            if len(cell.sums) != q:
                raise ValueError(
                    f"LinAdjustedStatistic: cell {key!r} has {len(cell.sums)} sums, expected {q} "
                    f"(outcomes {list(self.outcomes)} then covariates {list(self.covariates)})"
                )
            keys.append(tuple(str(level) for level in key))
            counts.append(cell.n)
            sums.append(cell.sums)
            triangles.append(cell.cross_products)
        if len(set(keys)) != len(keys):
            raise ValueError("LinAdjustedStatistic: two cells have the same levels")
        counts_array = np.asarray(counts, float)
        sums_array = np.asarray(sums, float)
        matrices = np.asarray(triangles, float)[:, _triangle_positions(q)].reshape(-1, q, q)
        diagonal = np.diagonal(matrices, axis1=1, axis2=2)
        for cell_index in np.flatnonzero(
            (diagonal < 0).any(axis=1)
            | (
                diagonal * counts_array[:, None] - sums_array**2
                < -1e-12 * diagonal * counts_array[:, None] - 1e-300
            ).any(axis=1)
            | ((counts_array == 0) & (np.abs(sums_array).sum(axis=1) > 0))
        ):
            cell = self.cells[list(self.cells)[cell_index]]
            for j in range(q):
                centred_second_moment(
                    cell.n,
                    cell.sums[j],
                    matrices[cell_index, j, j],
                    f"LinAdjustedStatistic cell {keys[cell_index]!r}",
                )
        setter(self, "cap", _optional_finite(self.cap, "cap"))
        setter(self, "_n", int(sum(counts)))
        setter(self, "_arrays", (tuple(keys), counts_array, sums_array, matrices))

    @property
    def n(self) -> int:
        return self._n

    @property
    def ratio(self) -> bool:
        return len(self.outcomes) == 2

    @property
    def mean(self) -> float:
        """The observed (unadjusted) mean, or the observed ratio for a ratio metric."""
        _, _, sums, _ = self._arrays
        totals = sums.sum(axis=0)
        if self.ratio:
            if totals[1] == 0:
                raise InsufficientDataError("the ratio is undefined: the denominator sums to zero")
            return float(totals[0] / totals[1])
        if self._n == 0:
            raise InsufficientDataError("the mean of an empty arm is undefined")
        return float(totals[0] / self._n)


@dataclass(frozen=True, slots=True)
class LinArmFit:
    """One arm's side of a Lin comparison."""

    n: int
    observed_mean: float  # the observed mean (ratio) of the arm
    adjusted_mean: float  # the regression's prediction at the pooled covariate mean
    variance: float  # the cell-averaged HC2 variance of adjusted_mean
    unadjusted_variance: float  # the Welch (delta-method) variance without adjustment
    degrees_of_freedom_terms: tuple[float, float]  # (Σ V_cell²/df_cell, Σ V_cell)


@dataclass(frozen=True, slots=True)
class LinDifference:
    """``treatment − control`` under Lin's adjustment, from ``lin_difference``."""

    control: LinArmFit
    treatment: LinArmFit
    estimate: float
    variance: float
    degrees_of_freedom: float
    covariates: tuple[str, ...]
    strata: tuple[str, ...]  # the stratum columns with more than one level here
    dropped: tuple[str, ...]  # regressors constant in both arms (no information)

    @property
    def variance_reduction(self) -> float | None:
        unadjusted = self.control.unadjusted_variance + self.treatment.unadjusted_variance
        return 1.0 - self.variance / unadjusted if unadjusted > 0 else None


def _stratum_design(
    statistics: Sequence[LinAdjustedStatistic],
) -> tuple[list[list[str]], list[str]]:
    """Levels per stratum column present in the compared arms, and the dummy names.

    The first level (in sorted order) of each column is the reference; a column
    with a single level here contributes no dummy.
    """
    strata = statistics[0].strata
    levels: list[list[str]] = []
    names: list[str] = []
    for position, column in enumerate(strata):
        present = sorted(
            {key[position] for statistic in statistics for key in statistic._arrays[0]}
        )
        levels.append(present)
        names += [f"{column}={level}" for level in present[1:]]
    return levels, names


def _dummies(keys: Sequence[tuple[str, ...]], levels: list[list[str]]) -> np.ndarray:
    columns = []
    for position, present in enumerate(levels):
        for level in present[1:]:
            columns.append([1.0 if key[position] == level else 0.0 for key in keys])
    if not columns:
        return np.zeros((len(keys), 0))
    return np.asarray(columns).T


@dataclass(frozen=True, slots=True)
class _ArmMoments:
    """Per-cell raw moments of t = (outcomes, covariates, dummies), and arm totals."""

    counts: np.ndarray  # (C,)
    first: np.ndarray  # (C, d): Σ t per cell
    second: np.ndarray  # (C, d, d): Σ t·tᵀ per cell
    n: float
    mean: np.ndarray  # (d,)
    scatter: np.ndarray  # (d, d): Σ (t − t̄)(t − t̄)ᵀ over the arm


def _arm_moments(statistic: LinAdjustedStatistic, levels: list[list[str]]) -> _ArmMoments:
    keys, counts, sums, matrices = statistic._arrays
    dummies = _dummies(keys, levels)  # (C, L)
    count = counts.size
    q = sums.shape[1]
    size = q + dummies.shape[1]
    first = np.empty((count, size))
    first[:, :q] = sums
    first[:, q:] = counts[:, None] * dummies
    second = np.empty((count, size, size))
    second[:, :q, :q] = matrices
    second[:, :q, q:] = sums[:, :, None] * dummies[:, None, :]
    second[:, q:, :q] = np.transpose(second[:, :q, q:], (0, 2, 1))
    second[:, q:, q:] = counts[:, None, None] * dummies[:, :, None] * dummies[:, None, :]
    n = float(counts.sum())
    total_first = first.sum(axis=0)
    mean = total_first / n
    scatter = second.sum(axis=0) - n * np.outer(mean, mean)
    return _ArmMoments(counts, first, second, n, mean, (scatter + scatter.T) / 2.0)


def _pseudo_inverse(scatter: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Moore–Penrose inverse of a scatter matrix and the projector on its range.

    Computed on the matrix scaled to unit diagonal, so the rank decision does
    not depend on the covariates' units (GMV in IDR beside orders).
    """
    size = scatter.shape[0]
    if size == 0:
        return np.zeros((0, 0)), np.zeros((0, 0))
    diagonal = np.diag(scatter).copy()
    scale = np.sqrt(np.where(diagonal > 0, diagonal, 1.0))
    scaled = scatter / np.outer(scale, scale)
    values, vectors = np.linalg.eigh(scaled)
    keep = values > _RANK_TOLERANCE * max(1.0, float(values.max(initial=0.0)))
    kept = vectors[:, keep]
    inverse_scaled = (kept / values[keep]) @ kept.T
    projector_scaled = kept @ kept.T
    inverse = inverse_scaled / np.outer(scale, scale)
    projector = (projector_scaled * scale[:, None]) / scale[None, :]
    return inverse, projector


def _fit_arm(
    moments: _ArmMoments,
    outcomes: int,
    pooled_regressor_mean: np.ndarray,
    ratio: bool,
    role: str,
    regressor_names: list[str],
) -> LinArmFit:
    m = outcomes
    scatter_rr = moments.scatter[m:, m:]
    scatter_ry = moments.scatter[m:, :m]
    inverse, projector = _pseudo_inverse(scatter_rr)
    slopes = inverse @ scatter_ry  # (p, m)
    shift = pooled_regressor_mean - moments.mean[m:]
    # The prediction at the pooled mean exists only if the shift lies in the
    # span of this arm's covariates: a covariate constant in this arm, or a
    # stratum level with no subjects in it, leaves the arm's slope there unknown.
    unexplained = shift - projector @ shift
    spread = np.sqrt(np.maximum(np.diag(scatter_rr), 0.0) / moments.n)
    badly = np.abs(unexplained) > 1e-8 * np.maximum(np.abs(pooled_regressor_mean), spread) + 1e-300
    if badly.any():
        which = [regressor_names[index] for index in np.flatnonzero(badly)]
        raise InsufficientDataError(
            f"the {role} arm cannot be adjusted for {which}: constant in (or absent from) that "
            "arm but not in the other, so its slope there is unknown"
        )
    prediction = moments.mean[:m] + slopes.T @ shift
    if ratio:
        if prediction[1] == 0:
            raise InsufficientDataError(
                f"the ratio is undefined in the {role} arm: its adjusted denominator is zero"
            )
        combination = np.array([1.0, -prediction[0] / prediction[1]]) / prediction[1]
        adjusted = float(prediction[0] / prediction[1])
        observed_denominator = moments.mean[1]
        if observed_denominator == 0:
            raise InsufficientDataError(
                f"the ratio is undefined in the {role} arm: its denominator sums to zero"
            )
        observed = float(moments.mean[0] / observed_denominator)
        plain = np.array([1.0, -observed]) / observed_denominator
    else:
        combination = np.ones(1)
        adjusted = float(prediction[0])
        observed = float(moments.mean[0])
        plain = np.ones(1)
    # ε_i = βᵀ(t_i − t̄): the residual of the combined outcome.
    beta = np.concatenate([combination, -slopes @ combination])
    centred = (
        moments.second
        - moments.mean[None, :, None] * moments.first[:, None, :]
        - moments.first[:, :, None] * moments.mean[None, None, :]
        + moments.counts[:, None, None] * np.outer(moments.mean, moments.mean)[None, :, :]
    )
    scale_terms = np.einsum("i,cij,j->c", np.abs(beta), np.abs(centred), np.abs(beta))
    residual = np.einsum("i,cij,j->c", beta, centred, beta)
    residual = np.where(residual > _RESIDUAL_TOLERANCE * scale_terms, residual, 0.0)
    direction = inverse @ shift  # w_i = 1/n + directionᵀ(r_i − r̄_arm)
    n = moments.n
    centred_rr = centred[:, m:, m:]
    offsets = moments.first[:, m:] - moments.counts[:, None] * moments.mean[None, m:]
    weight_squares = (
        moments.counts / (n * n)
        + 2.0 / n * offsets @ direction
        + np.einsum("i,cij,j->c", direction, centred_rr, direction)
    )
    leverage = moments.counts / n + np.einsum("ij,cji->c", inverse, centred_rr)
    freedom = moments.counts - leverage
    fitted_exactly = freedom <= 1e-9 * moments.counts
    if np.any(fitted_exactly & (moments.counts > 0)):
        raise InsufficientDataError(
            f"a stratum cell of the {role} arm is fitted exactly (too few subjects for its "
            "levels), so its variance cannot be estimated"
        )
    cell_variance = weight_squares * residual / np.where(fitted_exactly, 1.0, freedom)
    variance = float(cell_variance.sum())
    plain_total = float(plain @ moments.scatter[:m, :m] @ plain)
    unadjusted = max(plain_total, 0.0) / (n - 1) / n if n > 1 else 0.0
    return LinArmFit(
        n=int(n),
        observed_mean=observed,
        adjusted_mean=adjusted,
        variance=max(variance, 0.0),
        unadjusted_variance=unadjusted,
        degrees_of_freedom_terms=(
            float(np.sum(cell_variance**2 / np.where(fitted_exactly, 1.0, freedom))),
            variance,
        ),
    )


def lin_difference(control: LinAdjustedStatistic, treatment: LinAdjustedStatistic) -> LinDifference:
    """Lin's adjusted ``treatment − control``, its variance and degrees of freedom.

    Raises ``ValueError`` for statistics of different metrics (outcomes,
    covariates or strata differ) and ``InsufficientDataError`` when the
    adjustment is not identified (an arm with fewer than 2 subjects, a
    stratum level or covariate present in one arm only, an exactly fitted
    cell) or carries no variance.
    """
    for name in ("outcomes", "covariates", "strata"):
        if getattr(control, name) != getattr(treatment, name):
            raise ValueError(
                f"control and treatment differ in {name}: {list(getattr(control, name))} vs "
                f"{list(getattr(treatment, name))}"
            )
    for role, statistic in (("control", control), ("treatment", treatment)):
        if statistic.n < 2:
            raise InsufficientDataError(
                f"the {role} arm has {statistic.n} subject(s); at least 2 per arm are needed"
            )
    levels, dummy_names = _stratum_design([control, treatment])
    m = len(control.outcomes)
    arms = [_arm_moments(statistic, levels) for statistic in (control, treatment)]
    regressor_names = list(control.covariates) + dummy_names
    total = arms[0].n + arms[1].n
    pooled = (arms[0].n * arms[0].mean[m:] + arms[1].n * arms[1].mean[m:]) / total
    # Regressors constant over both arms (e.g. a covariate that is 0 for every
    # subject of a segment) carry no information: dropped, with a note.
    spread = np.diag(arms[0].scatter)[m:] + np.diag(arms[1].scatter)[m:]
    scale = np.abs(arms[0].second.sum(axis=0).diagonal()[m:]) + np.abs(
        arms[1].second.sum(axis=0).diagonal()[m:]
    )
    gap = np.abs(arms[0].mean[m:] - arms[1].mean[m:])
    informative = (spread > 1e-12 * scale) | (gap > 1e-12 * np.sqrt(scale / total))
    keep = np.concatenate([np.ones(m, bool), informative])
    dropped = tuple(
        name for name, used in zip(regressor_names, informative, strict=True) if not used
    )
    if not informative.all():
        arms = [
            _ArmMoments(
                a.counts,
                a.first[:, keep],
                a.second[:, keep][:, :, keep],
                a.n,
                a.mean[keep],
                a.scatter[keep][:, keep],
            )
            for a in arms
        ]
        pooled = pooled[informative]
        regressor_names = [
            name for name, used in zip(regressor_names, informative, strict=True) if used
        ]
    fits = [
        _fit_arm(arm, m, pooled, control.ratio, role, regressor_names)
        for arm, role in zip(arms, ("control", "treatment"), strict=True)
    ]
    variance = fits[0].variance + fits[1].variance
    if not variance > 0:
        raise InsufficientDataError(
            "zero residual variance in both arms after the adjustment (the metric is an exact "
            "function of the covariates and strata), so no test is possible"
        )
    denominator = fits[0].degrees_of_freedom_terms[0] + fits[1].degrees_of_freedom_terms[0]
    degrees_of_freedom = variance * variance / denominator if denominator > 0 else math.inf
    used_strata = tuple(
        column for column, present in zip(control.strata, levels, strict=True) if len(present) > 1
    )
    return LinDifference(
        control=fits[0],
        treatment=fits[1],
        estimate=fits[1].adjusted_mean - fits[0].adjusted_mean,
        variance=variance,
        degrees_of_freedom=degrees_of_freedom,
        covariates=control.covariates,
        strata=used_strata,
        dropped=dropped,
    )
