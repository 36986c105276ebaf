"""Deterministic experiment assignment, usable without Django: the one implementation the server and the client share.

The algorithm (written down for other languages in ``docs/assignment.md``, with
test vectors in ``docs/assignment-vectors.json``):

1. ``unit(digest, word)``: of a SHA-256 digest, the 8 bytes at ``8 * word``
   read as a big-endian unsigned integer, its top 53 bits divided by 2**53 — a
   float in [0, 1), exact in binary64 in every language. ``bucket(seed, id)``
   is ``unit(SHA-256(f"{seed}:{NFC(id)}"), 0)`` (UTF-8; ids in Unicode NFC).
2. Global holdout: if ``bucket("holdout:" + holdout.salt, id) < holdout.share``
   the subject is in no experiment (not evaluated when there is no holdout).
3. Layer: ``bucket("layer:" + layer_salt, id)`` must fall in the experiment's
   half-open ``layer_range`` [low, high). Experiments in the same layer own
   disjoint ranges, so a subject is in at most one of them. (A range of
   [0, 1) always matches, so it is not evaluated.)
4. The experiment's own digest ``d = SHA-256(f"{salt}:{id}")``. Coverage:
   ``unit(d, 0) < coverage``; it only ever grows while an experiment runs, so
   an included subject stays included.
5. Arm: ``unit(d, 1)`` against the cumulative normalised weights; the first arm
   whose cumulative share exceeds it. Words 0 and 1 of one SHA-256 digest are
   independent, so ramping coverage up never moves a subject to another arm.
"""

import hashlib
import math
import struct
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate

_SCALE = 2.0**-53
_TWO_WORDS = struct.Struct(">QQ16x").unpack  # words 0 and 1 of a SHA-256 digest


def unit(digest: bytes, word: int) -> float:
    return (int.from_bytes(digest[8 * word : 8 * word + 8], "big") >> 11) * _SCALE


def _word_bound(share: float) -> int:
    """The least 64-bit word whose ``unit`` is not below ``share``: ``unit(word) < share`` iff ``word < bound``.

    ``unit`` is ``(word >> 11) * 2**-53``, exact in binary64, so ``unit < share``
    iff ``word >> 11 < share * 2**53`` (scaling by a power of two is exact) iff
    ``word >> 11 < ceil(share * 2**53)`` iff ``word < ceil(share * 2**53) << 11``.
    The hot path then compares integers, with the result of the documented floats.
    """
    return math.ceil(share * 2.0**53) << 11


def subject_id_bytes(subject_id: str) -> bytes:
    """The bytes hashed for an id: UTF-8 of its NFC form (the form the server's pseudonym takes, so one
    subject typed in two normal forms is one subject everywhere). A lone surrogate has no UTF-8:
    ``UnicodeEncodeError``, a ``ValueError``."""
    if subject_id.isascii():  # ASCII is already NFC: the hot path skips the normalisation
        return subject_id.encode()
    return unicodedata.normalize("NFC", subject_id).encode()


def bucket(seed: str, subject_id: str) -> float:
    return unit(hashlib.sha256(seed.encode() + b":" + subject_id_bytes(subject_id)).digest(), 0)


@dataclass(frozen=True, slots=True)
class ArmSpec:
    key: str
    weight: float

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("arm key must not be empty")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"arm {self.key!r}: weight must be a positive number")


@dataclass(frozen=True, slots=True)
class HoldoutSpec:
    salt: str
    share: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.share < 1.0:
            raise ValueError("holdout share must be in [0, 1)")


@dataclass(frozen=True, slots=True)
class ExperimentSpec:
    key: str
    salt: str
    coverage: float
    arms: tuple[ArmSpec, ...]
    layer_range: tuple[float, float] = (0.0, 1.0)
    layer_salt: str = "default"
    holdout: HoldoutSpec | None = None
    # Derived once, so that evaluating a subject does no arithmetic on weights.
    _thresholds: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _seed_prefix: bytes = field(init=False, repr=False, compare=False)
    # The same comparisons on the digest's raw 64-bit words (see ``_word_bound``): no shift, no float.
    _coverage_bound: int = field(init=False, repr=False, compare=False)
    _arm_bounds: tuple[tuple[int, str], ...] = field(init=False, repr=False, compare=False)
    _whole_layer: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.key or not self.salt:
            raise ValueError("experiment key and salt must not be empty")
        if not 0.0 <= self.coverage <= 1.0:
            raise ValueError("coverage must be in [0, 1]")
        low, high = self.layer_range
        if not 0.0 <= low < high <= 1.0:
            raise ValueError("layer_range must satisfy 0 <= low < high <= 1")
        arms = tuple(self.arms)
        if len(arms) < 2:
            raise ValueError("an experiment needs at least two arms")
        if len({arm.key for arm in arms}) != len(arms):
            raise ValueError("arm keys must be unique")
        object.__setattr__(self, "arms", arms)
        object.__setattr__(self, "layer_range", (float(low), float(high)))
        total = math.fsum(arm.weight for arm in arms)
        thresholds = [cumulative / total for cumulative in accumulate(arm.weight for arm in arms)]
        thresholds[-1] = 1.0  # the last arm takes whatever rounding leaves over
        object.__setattr__(self, "_thresholds", tuple(thresholds))
        object.__setattr__(self, "_seed_prefix", f"{self.salt}:".encode())
        object.__setattr__(self, "_coverage_bound", _word_bound(self.coverage))
        object.__setattr__(self, "_arm_bounds", tuple(
            (_word_bound(threshold), arm.key) for arm, threshold in zip(arms, thresholds, strict=True)
        ))
        object.__setattr__(self, "_whole_layer", self.layer_range == (0.0, 1.0))

    @property
    def thresholds(self) -> tuple[float, ...]:
        """Each arm's cumulative share: prefix sums left to right, over the ``math.fsum`` total; the last is 1.0."""
        return self._thresholds


def spec_from_json(raw: Mapping[str, object], *, holdout: Mapping[str, object] | None = None) -> ExperimentSpec:
    """An ``ExperimentSpec`` from its JSON form (docs/assignment.md, "An experiment"), with the documented defaults.

    ``layer_range`` defaults to [0, 1], ``layer_salt`` to ``"default"`` and the
    holdout to none; ``holdout`` (the configuration's global one) is used when the
    spec names none. Raises ``ValueError`` (or ``KeyError``/``TypeError`` for a
    missing or mistyped field) for a spec that is not valid.
    """
    own_holdout = raw.get("holdout", holdout)
    return ExperimentSpec(
        key=str(raw["key"]),
        salt=str(raw["salt"]),
        coverage=float(raw["coverage"]),
        arms=tuple(ArmSpec(key=str(arm["key"]), weight=float(arm["weight"])) for arm in raw["arms"]),
        layer_range=tuple(float(x) for x in raw.get("layer_range", (0.0, 1.0))),
        layer_salt=str(raw.get("layer_salt", "default")),
        holdout=None
        if not own_holdout
        else HoldoutSpec(salt=str(own_holdout["salt"]), share=float(own_holdout["share"])),
    )


def in_holdout(holdout: HoldoutSpec | None, subject_id: str) -> bool:
    return holdout is not None and bucket("holdout:" + holdout.salt, subject_id) < holdout.share


def assign(spec: ExperimentSpec, subject_id: str) -> str | None:
    """The key of the arm ``subject_id`` is in, or None if it is not in the experiment."""
    if spec.holdout is not None and in_holdout(spec.holdout, subject_id):
        return None
    if not spec._whole_layer:
        low, high = spec.layer_range
        if not low <= bucket("layer:" + spec.layer_salt, subject_id) < high:
            return None
    # Steps 4 and 5 on the raw words: ``word < _word_bound(x)`` is ``unit(word) < x``.
    coverage_word, arm_word = _TWO_WORDS(hashlib.sha256(
        spec._seed_prefix + (subject_id.encode() if subject_id.isascii() else subject_id_bytes(subject_id))
    ).digest())
    if coverage_word >= spec._coverage_bound:
        return None
    for bound, key in spec._arm_bounds:
        if arm_word < bound:
            return key
    return spec.arms[-1].key  # unreachable: the last bound is 2**64 > any word


def targeting_matches(rules: Mapping[str, Sequence[str]], attributes: Mapping[str, object]) -> bool:
    """Targeting rules map an attribute to the values it may take; all must hold.

    ``{"age_band": ["18-24", "25-34"], "platform": ["android"]}`` matches a subject
    whose age band is one of the two and whose platform is android. A subject
    that does not report a targeted attribute does not match.
    """
    for attribute, allowed in rules.items():
        if isinstance(allowed, str):
            allowed = (allowed,)  # a lone value (refused on save, but never a substring match)
        value = attributes.get(attribute)
        if value is None or str(value) not in allowed:
            return False
    return True
