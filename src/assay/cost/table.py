"""Cost and energy per 1,000 inferences of a compression search's models, on every target.

On this machine the times are the search's measurements and the figures are labelled ``measured``; on
every other target they are projected (:mod:`assay.cost.projection`) and labelled ``projected``, with
the assumptions stated in the table. Each model is costed at batch 1 (a request at a time: the
latency-bound case) and at the throughput batch the search timed.

Example:
    >>> from assay.cost.projection import Machine
    >>> from assay.cost.targets import load_catalogue
    >>> here = Machine(gflops={"fp32": 100.0, "bf16": 200.0, "int8": 400.0}, bandwidth_gb_s=50.0,
    ...                clock_ghz=2.6, threads=2)
    >>> root = {"key": "root", "version": "m@v1", "precision": "fp32", "flops": 10**7, "metrics": {
    ...     "accuracy": {"value": 0.9}, "size_on_disk": {"value": 4e5}, "latency_p50_b1": {"value": 0.5},
    ...     "latency_p50_batch": {"value": 40.0, "batch_size": 256}}}
    >>> table = cost_table([root], load_catalogue(), here)
    >>> [t["name"] for t in table["targets"]][:2]
    ['this machine', 'aws-m7a.large']
    >>> table["rows"][0]["costs"]["this machine"]["b1"]["method"]
    'measured'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from assay.cost.projection import PER, Call, Machine, Projection, per_thousand, project
from assay.cost.targets import Catalogue, Target
from assay.env import watts_per_core

LOCAL = "this machine"
MODES = {"b1": "latency_p50_b1", "batch": "latency_p50_batch"}  # cost mode -> the timing it reads
MODE_WORDS = {"b1": "batch 1", "batch": "the throughput batch"}  # each mode as a table's title says it

ASSUMPTIONS = (
    "measured: this machine's own timings of each model (p50); projected: those timings carried to the "
    "target by the roofline model below, never measured there",
    "a call's time = max(arithmetic at the achieved rate for its precision, weights read at the achieved "
    "bandwidth), capped at the measured time, plus overhead; on a target the first part scales by the "
    "ratio of achievable arithmetic (compute-bound) or bandwidth (memory-bound), the overhead by the ratio "
    "of host base clocks (equal work per clock assumed), and an accelerator adds its fixed cost per call",
    "bytes read per call: the weights once (their size on disk); activations are assumed to stay in cache",
    "arithmetic: the model's FLOPs at batch 1 times the batch; int8 variants at the int8 rate, bf16 at "
    "the bf16 rate (a target without bf16 arithmetic computes it at the fp32 rate)",
    "the target kept busy: cost = busy time x the hourly price (an edge device's purchase spread over its "
    "life, plus electricity); energy = busy time x the stated power draw",
)


def target_machine(target: Target) -> Machine:
    return Machine(
        gflops=target.gflops.model_dump(),
        bandwidth_gb_s=target.bandwidth_gb_s,
        clock_ghz=target.clock_ghz,
        call_overhead_us=target.call_overhead_us,
        basis=target.rates_basis,
    )


def _value(point: Mapping[str, Any], name: str) -> float | None:
    value = point.get("metrics", {}).get(name, {}).get("value")
    return None if value is None else float(value)


def calls(point: Mapping[str, Any]) -> dict[str, Call]:
    """The measured calls of a search point, by mode: batch 1 and the throughput batch, where timed."""
    out = {}
    flops = float(point.get("flops") or 0)
    weights = _value(point, "size_on_disk") or 0.0
    precision = str(point.get("precision") or "fp32")
    for mode, metric in MODES.items():
        ms = _value(point, metric)
        if not ms:
            continue
        batch = 1 if mode == "b1" else int(point["metrics"][metric].get("batch_size") or 0)
        if batch < 1:
            continue  # a document from before batch sizes were recorded: no batch to cost per item
        out[mode] = Call(ms / 1e3, flops * batch, weights, precision, batch)
    return out


def _cell(call: Call, projection: Projection | None, usd_per_hour: float, watts: float) -> dict[str, Any]:
    seconds = call.seconds if projection is None else projection.seconds
    money = per_thousand(seconds, call.batch, usd_per_hour, watts)
    cell: dict[str, Any] = {
        "method": "measured" if projection is None else "projected",
        "batch": call.batch,
        "ms_per_call": seconds * 1e3,
        "usd": money.usd,
        "wh": money.wh,
    }
    if projection is not None:
        cell["bound"] = projection.bound
    return cell


def _targets(catalogue: Catalogue, here: Machine) -> list[dict[str, Any]]:
    electricity = catalogue.electricity_usd_per_kwh
    priced = catalogue.local.priced_as
    local = {
        "name": LOCAL,
        "kind": "local",
        "method": "measured",
        "description": f"the machine that timed the models ({here.threads} threads)",
        "usd_per_hour": catalogue.local_hourly_usd(),
        "price": f"priced as {priced}" if priced else "hourly_usd from [local]",
        "watts": here.threads * watts_per_core(),
        "watts_basis": f"estimated: {here.threads} threads x {watts_per_core():g} W per core",
        "rates": here.to_dict(),
    }
    return [local] + [
        {
            "name": t.name,
            "kind": t.kind,
            "method": "projected",
            "description": t.description,
            "usd_per_hour": t.usd_per_hour(electricity),
            "price": f"{t.price_date}, {t.source}",
            "watts": t.watts,
            "watts_basis": "stated in the catalogue",
            "rates": target_machine(t).to_dict(),
        }
        for t in catalogue.targets
    ]


def _frontier(rows: list[dict[str, Any]], target: str, mode: str) -> list[str]:
    """Keys no other row beats on accuracy and on cost per 1,000 at ``target`` in ``mode``."""
    scored = [
        (r["key"], r["accuracy"], r["costs"][target][mode]["usd"])
        for r in rows
        if r["accuracy"] is not None and mode in r["costs"][target]
    ]
    return [
        key for key, acc, usd in scored
        if not any(a >= acc and u <= usd and (a, u) != (acc, usd) for _, a, u in scored)
    ]  # fmt: skip


def cost_table(
    points: Sequence[Mapping[str, Any]], catalogue: Catalogue, here: Machine, *, unit: str = "inferences"
) -> dict[str, Any]:
    """Every point (the root first, then the variants) costed on this machine and each catalogue target.

    ``points``: search points (``root`` and trials, as in the compression document), with their
    measurements; ``here``: the rates of the machine that timed them. Rows for failed variants and
    flagged timings are kept (they show what the gate refused, or what cannot be trusted) but never named
    cheapest. ``unit``: what a call's ``batch`` counts (a language model's decode step makes one
    generated token per sequence)."""
    targets = _targets(catalogue, here)
    machines = {t.name: target_machine(t) for t in catalogue.targets}
    rows = []
    for point in points:
        measured = calls(point)
        costs: dict[str, dict[str, Any]] = {}
        for t in targets:
            costs[t["name"]] = {
                mode: _cell(
                    call,
                    None if t["name"] == LOCAL else project(call, here, machines[t["name"]]),
                    t["usd_per_hour"],
                    t["watts"],
                )
                for mode, call in measured.items()
            }
        rows.append(
            {
                "key": point["key"],
                "version": point.get("version"),
                "status": "parent" if point["key"] == "root" else point.get("status"),
                "precision": point.get("precision"),
                "accuracy": _value(point, "accuracy"),
                "flags": list(point.get("flags") or []),
                "costs": costs,
            }
        )
    # A failed variant is not shipped, and a flagged timing (an implausible speedup) prices nothing.
    shippable = [r for r in rows if r["status"] in ("parent", "passed") and not r["flags"]]
    cheapest: dict[str, dict[str, str | None]] = {}
    for t in targets:
        cheapest[t["name"]] = {}
        for mode in MODES:
            priced = [r for r in shippable if mode in r["costs"][t["name"]]]
            best = min(priced, key=lambda r: r["costs"][t["name"]][mode]["usd"], default=None)
            cheapest[t["name"]][mode] = None if best is None else best["key"]
    return {
        "per": PER,
        "unit": unit,
        "currency": "USD",
        "catalogue": catalogue.path,
        "electricity_usd_per_kwh": catalogue.electricity_usd_per_kwh,
        "targets": targets,
        "rows": rows,
        "cheapest": cheapest,
        "modes": MODE_WORDS,
        "frontier": {t["name"]: {m: _frontier(rows, t["name"], m) for m in MODES} for t in targets},
        "assumptions": list(ASSUMPTIONS),
    }
