"""Small-cell suppression: segment results never show a cell of fewer than k subjects.

A segment cell is one arm within one segment value ("platform=ios" × arm B).
A cell of a handful of subjects can single people out — its mean GMV may be
one shopper's spending — so every page and export shows segment results
through ``segments_suppress``: a cell with fewer than ``k`` subjects
(``settings.MIN_CELL_SUBJECTS``, 20 by default) keeps neither its count nor
anything computed from it, and says why. Because a dimension's cells add up
to the arm's total (which is shown), one suppressed cell could be recovered
by subtraction; so when a dimension and arm would have exactly one, the next
smallest cell is suppressed too (complementary suppression). A suppressed
control cell takes the whole segment's comparisons with it (each one shows
the control's count and mean).

Pure functions over the results document (docs/metrics.md); the stored
snapshots keep everything, so lowering or raising ``k`` applies to every run.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from django.conf import settings


def min_cell_subjects() -> int:
    return int(getattr(settings, "MIN_CELL_SUBJECTS", 20))


def suppression_reason(k: int) -> str:
    return f"Suppressed: fewer than {k} subjects in this segment cell (small cells could single people out)."


def complementary_reason(k: int) -> str:
    return (
        f"Suppressed: another cell of this segment dimension has fewer than {k} subjects, "
        "and this one would reveal it by subtraction from the arm's total."
    )


def _cells_to_suppress(segments: list[Mapping], k: int) -> dict[tuple[int, str], str]:
    """(segment index, arm) → why, for every cell to suppress."""
    hidden: dict[tuple[int, str], str] = {}
    by_dimension: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for index, segment in enumerate(segments):
        dimension = str(segment.get("segment", "")).partition("=")[0]
        for arm, count in (segment.get("arms") or {}).items():
            count = int(count or 0)
            by_dimension.setdefault((dimension, arm), []).append((count, index))
            if count < k:
                hidden[(index, arm)] = suppression_reason(k)
    for (_, arm), cells in by_dimension.items():
        small = [index for _, index in cells if (index, arm) in hidden]
        if len(small) == 1:
            others = sorted((count, index) for count, index in cells if (index, arm) not in hidden)
            if others:
                hidden[(others[0][1], arm)] = complementary_reason(k)
    return hidden


def segments_suppress(document: Mapping, *, k: int | None = None, control: str | None = None) -> dict:
    """A copy of a results document whose small segment cells are suppressed, with the reason.

    In each segment: suppressed arms leave ``arms`` and appear in
    ``suppressed`` (arm → reason); their comparisons (every comparison, if the
    control's cell is suppressed) become ``skipped`` entries with the reason;
    the segment's sample-ratio test, which lists every count, is dropped.
    ``settings.min_cell_subjects`` records ``k`` (in documents that have ``settings``).
    """
    k = min_cell_subjects() if k is None else k
    result = copy.deepcopy(dict(document))
    if isinstance(result.get("settings"), dict):  # older documents keep their shape
        result["settings"]["min_cell_subjects"] = k
    report = result.get("report")
    if not isinstance(report, dict) or not report.get("segments"):
        return result
    if control is None:
        control = next((arm.get("key") for arm in result.get("arms", []) if arm.get("is_control")), None)
    segments = report["segments"]
    hidden = _cells_to_suppress(segments, k)
    metrics = list((result.get("metrics") or {}).keys())
    for index, segment in enumerate(segments):
        reasons = {arm: why for (where, arm), why in hidden.items() if where == index}
        if not reasons:
            continue
        treatments = [arm for arm in segment.get("arms", {}) if arm != control]
        # The treatment arms whose comparisons go, and why: all of them if the control's cell goes.
        gone = {
            arm: reasons.get(arm) or reasons[control]
            for arm in treatments
            if arm in reasons or control in reasons
        }
        segment["suppressed"] = reasons
        segment["arms"] = {arm: n for arm, n in segment.get("arms", {}).items() if arm not in reasons}
        segment["srm"] = None
        segment["comparisons"] = [c for c in segment.get("comparisons", []) if c.get("arm") not in gone]
        segment["skipped"] = [s for s in segment.get("skipped", []) if s.get("arm") not in gone] + [
            {"arm": arm, "metric": metric, "reason": why} for arm, why in gone.items() for metric in metrics
        ]
    return result
