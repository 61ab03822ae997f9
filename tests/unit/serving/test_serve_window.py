"""The monitoring window: 500, or a sixth of a smaller reference; an explicit --window honoured or refused
with the flag and value to pass, never changed; whatever is chosen, the calibration accepts it."""

from __future__ import annotations

import pytest

from assay.errors import UsageError
from assay.serve.drift import calibrate
from assay.serve.reference import build_reference
from assay.serve.served import monitoring_window
from tests.unit.serve import table_rows

REF = "digits@v1"


@pytest.mark.parametrize(
    ("rows", "window"),
    [(10_000, 500), (3_000, 500), (2_999, 499), (1_200, 200), (360, 60), (180, 30)],
)
def test_the_chosen_window_is_500_or_a_sixth_of_the_reference(rows: int, window: int) -> None:
    chosen, line = monitoring_window(rows, None, REF)
    assert chosen == window
    assert f"windows of {window} examples" in line and "--window to choose" in line
    if window < 500:
        assert f"a sixth of {REF}'s release reference of {rows} rows" in line


@pytest.mark.parametrize(
    ("rows", "flag"),
    [
        (179, "Pass --window 29 (windows too small for the accuracy detector"),
        (60, "Pass --window 10 (windows too small"),
        (59, "Pass --no-monitor to serve without monitoring"),
    ],
)
def test_a_reference_too_small_to_choose_a_window_names_the_flag_to_pass(rows: int, flag: str) -> None:
    with pytest.raises(UsageError) as e:
        monitoring_window(rows, None, REF)
    message = str(e.value)
    assert f"has {rows} rows, too few for the smallest window assay chooses, 30 examples" in message
    assert "needs 180" in message and flag in message


def test_an_explicit_window_is_honoured_or_refused_never_changed() -> None:
    assert monitoring_window(360, 60, REF) == (60, "windows of 60 examples (--window)")
    assert monitoring_window(360, 10, REF)[0] == 10
    window, line = monitoring_window(360, 180, REF)  # the hard bound: one window a half
    assert window == 180 and "more than a sixth of the 360 reference rows" in line
    with pytest.raises(UsageError) as e:
        monitoring_window(360, 181, REF)
    assert "--window 181 is too large for digits@v1" in str(e.value)
    assert "needs 362" in str(e.value) and "Pass --window 60" in str(e.value)
    with pytest.raises(UsageError, match=r"--window 500 is too large.*Pass --no-monitor"):
        monitoring_window(50, 500, REF)


@pytest.mark.parametrize("rows", [180, 361, 2_999])
def test_the_calibration_accepts_every_window_chosen_or_honoured(rows: int) -> None:
    x, logits, features, labels = table_rows(rows, seed=rows)
    reference = build_reference(x, logits, features, labels)
    for requested in (None, rows // 2):
        window, _ = monitoring_window(rows, requested, REF)
        calibration = calibrate(reference, window=window, false_alarm_windows=100, n_resamples=100)
        assert calibration.window == window
    with pytest.raises(UsageError, match="too small for windows"):  # one row past the bound
        calibrate(reference, window=rows // 2 + 1, false_alarm_windows=100, n_resamples=100)
