"""Small-cell suppression: no segment cell of fewer than k subjects on any page or in any export."""

from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from experiments.disclosure import segments_suppress

METRICS = {"gmv": {"label": "GMV"}, "conversion": {"label": "Conversion"}}


def _comparison(arm, metric, control_n, treatment_n):
    return {"arm": arm, "metric": metric, "control_n": control_n, "treatment_n": treatment_n,
            "control_mean": 1.0, "treatment_mean": 2.0, "absolute": {"estimate": 1.0, "ci": [0, 2]},
            "relative": {"estimate": 1.0, "ci": [0, 2]}, "p_value_adjusted": 0.5, "significant": False,
            "method": "welch", "cuped": False}


def _segment(label, counts):
    control = counts["control"]
    return {
        "segment": label,
        "arms": dict(counts),
        "srm": {"observed": dict(counts), "p_value": 0.5, "flag": False},
        "comparisons": [
            _comparison(arm, metric, control, n) for arm, n in counts.items() if arm != "control" for metric in METRICS
        ],
        "skipped": [],
    }


def _document(*segments):
    return {
        "arms": [{"key": "control", "is_control": True}, {"key": "b", "is_control": False}],
        "metrics": METRICS,
        "settings": {},
        "report": {"comparisons": [], "segments": list(segments)},
    }


def _shown_counts(document):
    """Every subject count a reader can see per segment cell: the sizes and the comparisons' n."""
    shown = []
    for segment in document["report"]["segments"]:
        shown += list(segment["arms"].values())
        for comparison in segment["comparisons"]:
            shown += [comparison["control_n"], comparison["treatment_n"]]
        if segment.get("srm"):
            shown += list(segment["srm"]["observed"].values())
    return shown


def test_a_small_treatment_cell_is_suppressed_with_the_reason():
    document = _document(
        _segment("platform=ios", {"control": 300, "b": 7}),
        _segment("platform=android", {"control": 300, "b": 400}),
        _segment("platform=web", {"control": 50, "b": 60}),
    )
    result = segments_suppress(document, k=20)
    ios = result["report"]["segments"][0]
    assert ios["arms"] == {"control": 300}
    assert "fewer than 20 subjects" in ios["suppressed"]["b"]
    assert ios["comparisons"] == [] and ios["srm"] is None
    assert {(s["arm"], s["metric"]) for s in ios["skipped"]} == {("b", "gmv"), ("b", "conversion")}
    assert all("fewer than 20" in s["reason"] for s in ios["skipped"])
    # Complementary suppression: the smallest other cell of b in this dimension goes too (7 = total − the rest).
    web = result["report"]["segments"][2]
    assert "by subtraction" in web["suppressed"]["b"] and "b" not in web["arms"]
    android = result["report"]["segments"][1]
    assert android["arms"] == {"control": 300, "b": 400} and len(android["comparisons"]) == 2
    assert result["settings"]["min_cell_subjects"] == 20
    assert document["report"]["segments"][0]["arms"]["b"] == 7  # the stored document is untouched


def test_a_small_control_cell_takes_the_whole_segment():
    result = segments_suppress(
        _document(_segment("age_band=45+", {"control": 3, "b": 300}), _segment("age_band=18-24", {"control": 12, "b": 300})),
        k=20,
    )
    for segment in result["report"]["segments"]:
        assert segment["comparisons"] == [] and "control" in segment["suppressed"]
        assert {s["arm"] for s in segment["skipped"]} == {"b"}


@override_settings(MIN_CELL_SUBJECTS=5)
def test_k_is_configurable():
    result = segments_suppress(_document(_segment("platform=ios", {"control": 300, "b": 7})))
    assert "suppressed" not in result["report"]["segments"][0]
    assert result["settings"]["min_cell_subjects"] == 5


@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=6
    ),
    st.integers(1, 40),
)
def test_no_shown_count_is_below_k_and_no_small_count_can_be_derived(cells, k):
    segments = [_segment(f"province=p{i}", {"control": c, "b": b}) for i, (c, b) in enumerate(cells)]
    result = segments_suppress(_document(*segments), k=k)
    assert all(count >= k for count in _shown_counts(result))
    for arm in ("control", "b"):
        hidden = [s for s in result["report"]["segments"] if arm in s.get("suppressed", {})]
        # A lone suppressed cell could be derived from the arm's total, unless it is the only cell.
        assert len(hidden) != 1 or len(segments) == 1


def test_documents_without_segments_pass_unchanged():
    document = {"report": None, "settings": {}}
    assert segments_suppress(document, k=20) == {"report": None, "settings": {"min_cell_subjects": 20}}
    assert segments_suppress({"effects": {"b": 0.1}}, k=20) == {"effects": {"b": 0.1}}  # an older shape
