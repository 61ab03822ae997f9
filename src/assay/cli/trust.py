"""``assay trust MODEL``: the trust suite on a registered version (see :mod:`assay.trust`).

Writes the standard evaluation report (the metrics sections group robustness, adversarial, OOD,
fairness, privacy and security) plus SVG curves beside it, and records the run in the store.
Exit codes as everywhere: 0 done, 2 bad arguments or data (one line), 130 interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from assay.cli.common import (
    HomeOpt,
    JsonOpt,
    RayCpusOpt,
    RayMemoryOpt,
    RayOpt,
    data_spec,
    emit_json,
    err,
    executor,
    friendly,
    measurement_table,
    out,
    print_paths,
    workspace,
)
from assay.errors import UsageError


def _families(value: str | None) -> tuple[str, ...]:
    from assay.trust import FAMILIES

    if not value:
        return FAMILIES
    chosen = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = sorted(set(chosen) - set(FAMILIES))
    if unknown:
        raise UsageError(f"Unknown --families {unknown}. Known: {', '.join(FAMILIES)}.")
    return chosen


@friendly
def trust_cmd(
    model: Annotated[str, typer.Argument(help="A model ref: name, name@3, name@production.")],
    data: Annotated[str | None, typer.Option(help="Run on this data instead of the version's own.")] = None,
    split: str = "test",
    families: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated subset of: robustness, adversarial, ood, fairness, "
            "privacy, security (default: all)."
        ),
    ] = None,
    adversarial_n: Annotated[int, typer.Option(min=1, help="Seeded subset size for FGSM/PGD.")] = 1000,
    pgd_steps: Annotated[int, typer.Option(min=1, help="PGD steps.")] = 20,
    restarts: Annotated[int, typer.Option(min=1, help="PGD random restarts.")] = 1,
    corruption_n: Annotated[
        int | None,
        typer.Option(
            min=1, help="Seeded subset for corruptions (default, or larger than the split: all of it)."
        ),
    ] = None,
    text_perturbation_n: Annotated[
        int | None, typer.Option(min=1, help="Texts: seeded subset for the perturbations (default 150).")
    ] = None,
    text_attack_n: Annotated[
        int | None, typer.Option(min=1, help="Texts: seeded subset for the character attack (default 40).")
    ] = None,
    text_ood_n: Annotated[
        int | None, typer.Option(min=1, help="Texts: size of each OOD set (default 300).")
    ] = None,
    n_boot: Annotated[int, typer.Option(min=100, help="Bootstrap resamples for the intervals.")] = 1000,
    seed: int = 0,
    parent: Annotated[
        bool, typer.Option(help="Use the version's parent as the CE baseline and the transfer source.")
    ] = True,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder for the report (default: the store's).")
    ] = None,
    ray: RayOpt = None,
    ray_cpus: RayCpusOpt = 1,
    ray_memory: RayMemoryOpt = 2,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Trust suite: corruption and adversarial robustness, OOD detection, fairness, privacy, backdoors."""
    from assay.trust import TrustConfig
    from assay.trust_runs import trust_version

    config = TrustConfig(
        families=_families(families),
        adversarial_n=adversarial_n,
        pgd_steps=pgd_steps,
        restarts=restarts,
        corruption_n=corruption_n,
        n_boot=n_boot,
        seed=seed,
        # the text sizes given, else TrustConfig's defaults (the ones the help names)
        text_perturbation_n=text_perturbation_n or TrustConfig.text_perturbation_n,
        text_attack_n=text_attack_n or TrustConfig.text_attack_n,
        text_ood_n=text_ood_n or TrustConfig.text_ood_n,
    )
    run = trust_version(
        workspace(home),
        model,
        data_spec=data_spec(data, None, None),
        split=split,
        config=config,
        out_dir=out_dir,
        against_parent=parent,
        progress=not json_out,
        executor=executor(ray, ray_cpus, ray_memory, json_out),
    )
    if json_out:
        emit_json(
            {
                **run.document,
                "report": str(run.html),
                "run_id": run.run_id,
                "seconds": run.result.seconds,
            }
        )
        return
    trust_names = {m.name for m in run.result.measurements}
    # Names like adv_accuracy[pgd-linf@0.1] would read as rich markup: escape them for the table.
    rows = [
        {**m, "name": escape(m["name"])} for m in run.document["measurements"] if m["name"] in trust_names
    ]
    out.print(measurement_table(rows, f"Trust suite: {run.document['title']}"))
    err.print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in run.result.seconds.items()), highlight=False)
    print_paths(report=run.html)
