"""Sufficient statistics: the only input the engine needs.

One SQL aggregate per experiment produces these per arm (and per segment), so
the engine never sees per-subject rows. Each class validates itself on
construction, because a wrong sum that slips through becomes a confident,
wrong p-value far away from its cause.

All second moments are *raw* (``sum_squares = Σ x²``, ``cross_product = Σ x·y``),
which is what ``SUM(x * x)`` returns in SQL. Variances are the unbiased sample
variances (divisor ``n − 1``), so that the tests coincide with statsmodels and
scipy on the same rows.

Numerical note: the variance is recovered as ``(Σx² − (Σx)²/n)/(n − 1)``. In
float64 that loses the variance when the coefficient of variation is below about
1e-6 (e.g. a metric near 10⁶ that varies by less than 1). A centred second
moment smaller than ``_ZERO_TOLERANCE`` times the raw one is treated as exactly
zero (every subject has the same value); a clearly negative one means the
statistics are inconsistent and raises ``ValueError``.
"""

from __future__ import annotations

import decimal
import math
import numbers
from dataclasses import dataclass, field

# Relative size under which a centred second moment is rounding noise. Rounding
# in Σx² is a few ulps (≈ 1e-16) of Σx²; 1e-12 leaves a wide margin for sums
# accumulated in a different order by the database.
_ZERO_TOLERANCE = 1e-12


class InsufficientDataError(ValueError):
    """Valid statistics that still cannot support a test (too few subjects, no variance).

    A ``ValueError`` so callers that only want "bad input" can catch that; the
    report catches this subclass to skip a thin segment instead of failing.
    """


def _is_number(value: object) -> bool:
    # Decimal is what PostgreSQL's SUM over integers returns through psycopg.
    return not isinstance(value, bool) and isinstance(value, numbers.Real | decimal.Decimal)


def _count(value: object, name: str) -> int:
    if type(value) is int and value >= 0:  # the common case, kept cheap for big reports
        return value
    if not _is_number(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if isinstance(value, numbers.Integral):
        count = int(value)
    elif isinstance(value, decimal.Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        count = int(value)
    else:
        as_float = float(value)
        if not math.isfinite(as_float) or not as_float.is_integer():
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        count = int(as_float)
    if count < 0:
        raise ValueError(f"{name} must not be negative, got {count}")
    return count


def _finite(value: object, name: str) -> float:
    if type(value) is float and math.isfinite(value):
        return value
    if not _is_number(value):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    as_float = float(value)
    if not math.isfinite(as_float):
        raise ValueError(f"{name} must be finite, got {as_float}")
    return as_float


def _optional_finite(value: object, name: str) -> float | None:
    return None if value is None else _finite(value, name)


def centred_second_moment(n: int, total: float, sum_squares: float, what: str) -> float:
    """``Σ(x − x̄)²`` from raw sums, with rounding noise clamped to zero."""
    if n == 0:
        if total != 0 or sum_squares != 0:
            raise ValueError(f"{what}: n is 0 but the sums are not")
        return 0.0
    if sum_squares < 0:
        raise ValueError(f"{what}: the sum of squares must not be negative, got {sum_squares}")
    centred = sum_squares - total * total / n
    if centred < -_ZERO_TOLERANCE * sum_squares - 1e-300:
        raise ValueError(
            f"{what}: inconsistent statistics (sum of squares {sum_squares} is smaller "
            f"than sum²/n = {total * total / n})"
        )
    return centred if centred > _ZERO_TOLERANCE * sum_squares else 0.0


def nonnegative_or_zero(value: float, scale: float) -> float:
    """A quantity that is ≥ 0 in exact arithmetic (a sum of squares computed as
    ``a − 2b + c``), with cancellation noise below ``_ZERO_TOLERANCE·scale``
    (``scale`` = the size of the terms) set to exactly zero.

    Without this an exact fit (a metric that is exactly linear in its
    covariate) would get a residual variance of 1e-30 instead of 0 and a
    t-statistic of 1e14 instead of an error.
    """
    return value if value > _ZERO_TOLERANCE * scale else 0.0


def centred_cross_moment(
    n: int,
    x_total: float,
    y_total: float,
    cross_product: float,
    x_centred: float,
    y_centred: float,
    what: str,
) -> float:
    """``Σ(x − x̄)(y − ȳ)`` from raw sums, checked against Cauchy–Schwarz."""
    if n == 0:
        if cross_product != 0:
            raise ValueError(f"{what}: n is 0 but the cross-product is not")
        return 0.0
    centred = cross_product - x_total * y_total / n
    bound = math.sqrt(x_centred * y_centred)
    # The same rounding allowance as for the second moments, on the scale of the
    # raw cross-product that produced ``centred``.
    slack = _ZERO_TOLERANCE * (abs(cross_product) + abs(x_total * y_total / n)) + 1e-300
    if abs(centred) > bound * (1 + 1e-9) + slack:
        raise ValueError(
            f"{what}: inconsistent statistics (the centred cross-product {centred} exceeds "
            f"the Cauchy–Schwarz bound {bound})"
        )
    return max(-bound, min(bound, centred))


@dataclass(frozen=True, slots=True)
class SampleMeanStatistic:
    """A per-subject metric analysed as a mean (GMV per subject, orders per subject).

    ``cap`` records the value the metric was capped at (computed in SQL at a
    percentile of the pooled arms); the sums must already be of capped values.
    It is reported, and the report checks that every arm used the same cap.
    """

    n: int
    sum: float
    sum_squares: float
    cap: float | None = None
    # Validated once here and reused: a report compares each control with every arm.
    _centred: float = field(default=0.0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", _count(self.n, "n"))
        object.__setattr__(self, "sum", _finite(self.sum, "sum"))
        object.__setattr__(self, "sum_squares", _finite(self.sum_squares, "sum_squares"))
        object.__setattr__(self, "cap", _optional_finite(self.cap, "cap"))
        object.__setattr__(
            self,
            "_centred",
            centred_second_moment(self.n, self.sum, self.sum_squares, "SampleMeanStatistic"),
        )

    @property
    def mean(self) -> float:
        if self.n == 0:
            raise InsufficientDataError("the mean of an empty arm is undefined")
        return self.sum / self.n

    @property
    def variance(self) -> float:
        if self.n < 2:
            raise InsufficientDataError(f"a variance needs at least 2 subjects, got n={self.n}")
        return self._centred / (self.n - 1)


@dataclass(frozen=True, slots=True)
class ProportionStatistic:
    """A 0/1 per-subject metric (converted, opted out): subjects and successes.

    The test is the same Welch test as for means, on the Bernoulli sample
    variance ``p(1 − p)·n/(n − 1)`` of each arm (unpooled).
    """

    n: int
    successes: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", _count(self.n, "n"))
        object.__setattr__(self, "successes", _count(self.successes, "successes"))
        if self.successes > self.n:
            raise ValueError(
                f"ProportionStatistic: successes ({self.successes}) exceed n ({self.n})"
            )

    @property
    def sum(self) -> float:
        return float(self.successes)

    @property
    def sum_squares(self) -> float:
        # x² = x for a 0/1 metric.
        return float(self.successes)

    cap = None

    @property
    def mean(self) -> float:
        if self.n == 0:
            raise InsufficientDataError("the proportion of an empty arm is undefined")
        return self.successes / self.n

    @property
    def variance(self) -> float:
        if self.n < 2:
            raise InsufficientDataError(f"a variance needs at least 2 subjects, got n={self.n}")
        p = self.successes / self.n
        return p * (1.0 - p) * self.n / (self.n - 1)


@dataclass(frozen=True, slots=True)
class RegressionAdjustedStatistic:
    """A metric with a pre-exposure covariate, for CUPED (regression adjustment).

    ``cross_product`` is ``Σ metric × covariate``. The slope is not stored: it is
    estimated when two arms are compared, on both arms pooled.
    """

    n: int
    sum: float
    sum_squares: float
    covariate_sum: float
    covariate_sum_squares: float
    cross_product: float
    cap: float | None = None
    _centred: tuple[float, float, float] = field(
        default=(0.0, 0.0, 0.0), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        setter = object.__setattr__
        setter(self, "n", _count(self.n, "n"))
        setter(self, "sum", _finite(self.sum, "sum"))
        setter(self, "sum_squares", _finite(self.sum_squares, "sum_squares"))
        setter(self, "covariate_sum", _finite(self.covariate_sum, "covariate_sum"))
        setter(
            self,
            "covariate_sum_squares",
            _finite(self.covariate_sum_squares, "covariate_sum_squares"),
        )
        setter(self, "cross_product", _finite(self.cross_product, "cross_product"))
        setter(self, "cap", _optional_finite(self.cap, "cap"))
        setter(self, "_centred", self._compute_centred_moments())

    def centred_moments(self) -> tuple[float, float, float]:
        """``(Syy, Sxx, Sxy)``: centred sums of squares and cross-product."""
        return self._centred

    def _compute_centred_moments(self) -> tuple[float, float, float]:
        what = "RegressionAdjustedStatistic"
        syy = centred_second_moment(self.n, self.sum, self.sum_squares, what + " (metric)")
        sxx = centred_second_moment(
            self.n, self.covariate_sum, self.covariate_sum_squares, what + " (covariate)"
        )
        sxy = centred_cross_moment(
            self.n, self.covariate_sum, self.sum, self.cross_product, sxx, syy, what
        )
        return syy, sxx, sxy

    @property
    def mean(self) -> float:
        if self.n == 0:
            raise InsufficientDataError("the mean of an empty arm is undefined")
        return self.sum / self.n

    @property
    def covariate_mean(self) -> float:
        if self.n == 0:
            raise InsufficientDataError("the mean of an empty arm is undefined")
        return self.covariate_sum / self.n

    @property
    def variance(self) -> float:
        if self.n < 2:
            raise InsufficientDataError(f"a variance needs at least 2 subjects, got n={self.n}")
        return self._centred[0] / (self.n - 1)


@dataclass(frozen=True, slots=True)
class RatioStatistic:
    """A ratio of two per-subject sums (AOV = GMV / orders, CTR = clicks / impressions).

    ``n`` counts subjects (the randomisation unit), not orders or impressions:
    the delta method needs the per-subject numerator and denominator to get the
    variance right when one subject contributes several orders.
    """

    n: int
    numerator_sum: float
    numerator_sum_squares: float
    denominator_sum: float
    denominator_sum_squares: float
    cross_product: float
    _centred: tuple[float, float, float] = field(
        default=(0.0, 0.0, 0.0), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        setter = object.__setattr__
        setter(self, "n", _count(self.n, "n"))
        setter(self, "numerator_sum", _finite(self.numerator_sum, "numerator_sum"))
        setter(
            self,
            "numerator_sum_squares",
            _finite(self.numerator_sum_squares, "numerator_sum_squares"),
        )
        setter(self, "denominator_sum", _finite(self.denominator_sum, "denominator_sum"))
        setter(
            self,
            "denominator_sum_squares",
            _finite(self.denominator_sum_squares, "denominator_sum_squares"),
        )
        setter(self, "cross_product", _finite(self.cross_product, "cross_product"))
        setter(self, "_centred", self._compute_centred_moments())

    cap = None

    def centred_moments(self) -> tuple[float, float, float]:
        """``(Snn, Sdd, Snd)``: centred numerator/denominator sums of squares and cross-product."""
        return self._centred

    def _compute_centred_moments(self) -> tuple[float, float, float]:
        what = "RatioStatistic"
        snn = centred_second_moment(
            self.n, self.numerator_sum, self.numerator_sum_squares, what + " (numerator)"
        )
        sdd = centred_second_moment(
            self.n, self.denominator_sum, self.denominator_sum_squares, what + " (denominator)"
        )
        snd = centred_cross_moment(
            self.n, self.numerator_sum, self.denominator_sum, self.cross_product, snn, sdd, what
        )
        return snn, sdd, snd

    @property
    def mean(self) -> float:
        """The ratio ``Σ numerator / Σ denominator``."""
        if self.denominator_sum == 0:
            raise InsufficientDataError("the ratio is undefined: the denominator sums to zero")
        return self.numerator_sum / self.denominator_sum


Statistic = SampleMeanStatistic | ProportionStatistic | RegressionAdjustedStatistic | RatioStatistic
# CUPED++ (experiments.stats.regression.LinAdjustedStatistic) is a statistic too;
# it lives beside its estimator, which needs numpy's linear algebra.
