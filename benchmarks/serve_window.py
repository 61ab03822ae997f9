"""The monitoring window for a small reference: false alarms and power by reference rows per window row.

Behind the rule in ``serve.served.monitoring_window`` (a sixth of a reference under 3,000 rows): for each
of ``N_REFS`` references of the synthetic table model (tests.unit.serve), the thresholds are calibrated
at a budget of one false alarm per 100 windows for windows of reference/2 ... reference/10 rows, then
live windows of unshifted traffic count false alarms and windows with one feature shifted by half an sd
count detections. Prints one row per ratio: the false-alarm rate (mean, p90, max over references), the
share of references above twice the budget, and the power per window. The figures are in
docs/monitoring.md ("Window size"); about 15 minutes of CPU at the defaults.

    python benchmarks/serve_window.py [REFERENCE_ROWS=360] [REFERENCES=20]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from assay.serve.drift import baseline_for, calibrate
from assay.serve.reference import build_reference

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package, for the table model
from tests.unit.serve import TABLE_MODEL, alarms, table_rows, windows

BUDGET = 100  # windows between false alarms
N_LIVE = 1500  # live windows per reference
RATIOS = (2, 3, 4, 6, 10)


def main(n_ref: int, n_refs: int) -> None:
    rates: dict[int, list[float]] = {r: [] for r in RATIOS}
    power: dict[int, list[float]] = {r: [] for r in RATIOS}
    start = time.time()
    for i in range(n_refs):
        x, logits, features, labels = table_rows(n_ref, seed=1000 + i)
        reference = build_reference(x, logits, features, labels)
        for r in RATIOS:
            w = n_ref // r
            cal = calibrate(reference, window=w, false_alarm_windows=BUDGET, seed=i)
            base = baseline_for(reference, cal)
            lx, ll, lf, ly = table_rows(w * N_LIVE, seed=50_000 + i)
            rates[r].append(float(alarms(base, cal, windows(base, lx, ll, lf, ly, w)).mean()))
            shifted = lx[: w * 300].copy()
            shifted[:, 0] += 0.5  # half a standard deviation in one feature
            sl, sf = TABLE_MODEL(shifted)
            power[r].append(float(alarms(base, cal, windows(base, shifted, sl, sf, ly[: w * 300], w)).mean()))
    print(
        f"reference {n_ref} rows, {n_refs} references, budget 1/{BUDGET} a window, "
        f"{time.time() - start:.0f} s"
    )
    print("ratio  window  false alarms: mean    p90    max  share>2x budget  power a window")
    for r in RATIOS:
        far, pw = np.array(rates[r]), np.array(power[r])
        print(
            f"{r:5d}  {n_ref // r:6d}  {far.mean():19.4f}  {np.quantile(far, 0.9):.4f}  {far.max():.4f}"
            f"  {np.mean(far > 2 / BUDGET):15.2f}  {pw.mean():14.3f}"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 360, int(sys.argv[2]) if len(sys.argv) > 2 else 20)
