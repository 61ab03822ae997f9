"""The figures remembered by their inputs: equal inputs give the very SVG the drawing gives, drawn once;
other inputs are drawn anew."""

from __future__ import annotations

from typing import Any

import pytest

from assay.report import plots


def bins(accuracy: float) -> dict[str, list[Any]]:
    return {
        "bin_lower": [0.0, 0.5],
        "bin_upper": [0.5, 1.0],
        "confidence": [0.31, 0.83],
        "accuracy": [0.29, accuracy],
        "count": [11, 37],
    }


def test_equal_inputs_are_drawn_once_and_give_the_drawn_svg(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[str] = []
    svg = plots._svg
    monkeypatch.setattr(plots, "_svg", lambda fig, key, title: drawn.append(key) or svg(fig, key, title))
    # an accuracy no other test draws, so the first call is the one that draws
    first = plots.reliability_svg(bins(0.712345), key="r-test", heading="h", title="t")
    again = plots.reliability_svg(bins(0.712345), key="r-test", heading="h", title="t")
    assert drawn == ["r-test"] and again == first
    other = plots.reliability_svg(bins(0.612345), key="r-test", heading="h", title="t")
    assert drawn == ["r-test", "r-test"] and other != first
    assert first == plots.reliability_svg.__wrapped__(bins(0.712345), key="r-test", heading="h", title="t")
    matrix = [[5, 1], [2, 9]]
    plots.confusion_svg(matrix, ["a", "b"], key="c-test-9", heading="h", title="t")
    plots.confusion_svg(matrix, ["a", "b"], key="c-test-9", heading="h", title="t")
    assert drawn.count("c-test-9") == 1
