"""The verbs a user scripts, in Python: import or load a model, fine-tune it, evaluate, gate, promote,
roll back, cost a compression search's variants.

Each is what one CLI command does (``assay models import``, ``assay finetune``, ``assay eval``, ``assay
gate``, ``assay models promote|rollback``, ``assay cost``), on the store under ``home`` (default
``$ASSAY_HOME`` or ``./.assay``). Errors are :class:`~assay.errors.AssayError` subclasses that name the
parameter and the value. Evaluating or gating predictions files imports no PyTorch: a team whose models
run elsewhere gets the paired gate without it.

Example: two models' predictions on the same examples, gated under the default policy.

    >>> import tempfile, numpy as np
    >>> from assay import api
    >>> from assay.outputs import from_arrays, write_predictions
    >>> rng = np.random.default_rng(0)
    >>> labels = rng.integers(0, 3, 400)
    >>> def predictions(skill, path):
    ...     probs = np.full((400, 3), (1 - skill) / 2)
    ...     probs[np.arange(400), labels] = skill
    ...     return write_predictions(from_arrays(labels, probs=probs), path)
    >>> home = tempfile.mkdtemp()
    >>> a, b = predictions(0.6, f"{home}/a.npz"), predictions(0.6, f"{home}/b.npz")
    >>> result = api.gate(a, b, home=home)
    >>> result.verdict.passed, round(result.document["verdict"]["rules"][0]["delta"], 3)
    (True, 0.0)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.data import DataSpec, parse_data_arg
from assay.errors import UsageError
from assay.gate import Policy
from assay.store.records import AliasChange
from assay.workspace import Evaluated, Workspace, evaluate_predictions, gate_predictions, is_predictions

if TYPE_CHECKING:  # the model side imports torch: only when a model is named
    from assay.model_import import Imported
    from assay.models.loaded import LoadedModel


def _data(data: str | DataSpec | None, parameter: str = "data") -> DataSpec | None:
    if data is None or isinstance(data, DataSpec):
        return data
    if not isinstance(data, str):
        raise UsageError(
            f"The {parameter!r} parameter must be a data source such as 'npz:FILE' or a DataSpec. "
            f"Got {type(data).__name__} instead."
        )
    return parse_data_arg(data)


def open_workspace(home: str | Path | None = None, *, url: str | None = None) -> Workspace:
    """The store under ``home`` (or at the database ``url``) with its report and outputs folders."""
    return Workspace.open(home, url=url)


def import_model(
    name: str,
    source: str | Path,
    *,
    data: str | DataSpec,
    weights: str | Path | None = None,
    adapter: str | None = None,
    description: str = "",
    licence: str | None = None,
    home: str | Path | None = None,
) -> Imported:
    """Register a model assay did not train (see :mod:`assay.model_import`) as the next version of ``name``.

    ``source``: ``"model.py:build"`` or ``"package.module:build"`` (your own ``nn.Module``; the factory is
    your code and runs), ``"model.pt2"``, ``"model.onnx"``, or a Hugging Face folder. ``data``: the data it
    is meant for, e.g. ``"sklearn:digits"``. ``weights``: a torch module's ``.safetensors`` (or checkpoint,
    scanned first). Nothing is registered when a check fails.
    """
    from assay.model_import import import_model as door

    spec = _data(data)
    if spec is None:
        raise UsageError("The 'data' parameter is required: the data the model is meant for.")
    return door(
        open_workspace(home),
        name,
        source,
        data=spec,
        weights=weights,
        adapter=adapter,
        description=description,
        licence=licence,
    )


def finetune(
    ref: str,
    *,
    data: str | DataSpec | None = None,
    name: str | None = None,
    checkpoint: str | Path | None = None,
    description: str = "",
    licence: str | None = None,
    progress: bool = False,
    home: str | Path | None = None,
    **settings: Any,
) -> Imported:
    """Fine-tune the registered Hugging Face text classifier ``ref`` and register the result as the next
    version of ``name`` (default: the same model), with ``ref`` as its parent (see
    :mod:`assay.finetune_run`).

    ``data``: the texts to fine-tune on (default: the version's own data; other data must fit its input
    contract). ``settings``: :class:`~assay.train.finetune.FinetuneConfig`'s fields (``epochs``,
    ``batch_size``, ``lr``, ``warmup``, ``schedule``, ``max_grad_norm``, ``precision``, ``seed``, ...);
    an unknown or bad one is a UsageError before anything runs. ``checkpoint``: a folder where each
    finished epoch is kept; called again with the same folder, a run continues after the last one.

    Example (a few minutes on 2 cores for MiniLM on 400 fortunes)::

        from assay import api
        api.import_model("quotes", "minilm-head", data="fortunes")     # examples/minilm_head.py's folder
        imported = api.finetune("quotes@v1", epochs=2, lr=3e-5, checkpoint="ckpt")
        imported.version.ref, imported.version.parent                   # ('quotes@v2', 'quotes@v1')
        api.gate("quotes@v1", imported.version.ref)
    """
    from assay.finetune_run import finetune_version
    from assay.train.finetune import FinetuneConfig

    config = FinetuneConfig.parse(settings)
    imported, _ = finetune_version(
        open_workspace(home),
        ref,
        config,
        data_spec=_data(data),
        name=name,
        checkpoint=None if checkpoint is None else Path(checkpoint),
        description=description,
        licence=licence,
        progress=progress,
    )
    return imported


def load_model(ref: str, *, home: str | Path | None = None) -> LoadedModel:
    """The registered version ``ref`` (``"name"``, ``"name@3"``, ``"name@production"``) as a model."""
    from assay.release import model_of

    ws = open_workspace(home)
    return model_of(ws, ws.store.resolve(ref))


def evaluate(
    target: str | Path,
    *,
    data: str | DataSpec | None = None,
    split: str = "test",
    efficiency: bool = True,
    n_bootstrap: int = 1000,
    seed: int = 0,
    force_data: bool = False,
    save_predictions: str | Path | None = None,
    out_dir: str | Path | None = None,
    home: str | Path | None = None,
) -> Evaluated:
    """Evaluate a model version (a ref) or a predictions file (``.npz``/``.parquet``): every metric with
    its interval, written as a report and recorded as a run.

    ``data``: other data for a model (it must fit the model's input contract unless ``force_data``).
    """
    ws, out = open_workspace(home), None if out_dir is None else Path(out_dir)
    if is_predictions(str(target)) and save_predictions is None:
        if data is not None:
            raise UsageError(f"The 'data' parameter applies to models; {target} is a predictions file.")
        return evaluate_predictions(ws, Path(target), n_boot=n_bootstrap, seed=seed, out_dir=out)
    from assay.release import evaluate_target

    return evaluate_target(
        ws,
        str(target),
        data_spec=_data(data),
        split=split,
        efficiency=efficiency,
        n_boot=n_bootstrap,
        seed=seed,
        out_dir=out,
        force_data=force_data,
        save_predictions=None if save_predictions is None else Path(save_predictions),
    )


def gate(
    baseline: str | Path,
    candidate: str | Path,
    *,
    policy: str | Path | Policy | None = None,
    data: str | DataSpec | None = None,
    efficiency: bool = True,
    force_data: bool = False,
    out_dir: str | Path | None = None,
    home: str | Path | None = None,
) -> Evaluated:
    """Gate ``candidate`` against ``baseline`` on the same examples under ``policy`` (a TOML file or a
    :class:`~assay.gate.Policy`; default :meth:`Policy.default`, or for two lm-eval generation logs
    :data:`~assay.workspace.GENERATION_LOG_POLICY_TOML`). Each is a model ref or a predictions file. The
    result's ``verdict.passed`` is the decision; a failed gate is a result, not an error.
    """
    ws, out = open_workspace(home), None if out_dir is None else Path(out_dir)
    if is_predictions(str(baseline)) and is_predictions(str(candidate)):
        if data is not None:
            raise UsageError("The 'data' parameter applies to models; both targets are predictions files.")
        return gate_predictions(ws, Path(baseline), Path(candidate), policy, out_dir=out)
    from assay.release import gate_targets

    return gate_targets(
        ws,
        str(baseline),
        str(candidate),
        policy,
        data_spec=_data(data),
        efficiency=efficiency,
        out_dir=out,
        force_data=force_data,
    )


def promote(
    ref: str, *, alias: str = "production", force: bool = False, reason: str | None = None,
    home: str | Path | None = None,
) -> AliasChange:  # fmt: skip
    """Point ``alias`` at ``ref``; refused (:class:`~assay.errors.RefusedError`) when its gate failed,
    unless ``force`` (recorded as forced)."""
    return open_workspace(home).store.promote(ref, alias, force=force, reason=reason)


def cost(
    model: str,
    *,
    targets: str | Path | None = None,
    search: str | Path | None = None,
    home: str | Path | None = None,
) -> dict[str, Any]:
    """What ``model``'s compression search variants cost per 1,000 inferences (see :mod:`assay.cost`):
    measured on the machine that timed them, projected on each target of the catalogue ``targets``
    (default: assay's own). ``model``: a name (its newest search) or a ref (that version's newest);
    ``search``: a search's JSON document instead. The table names the search document it read."""
    import json

    from assay.compress import latest_search, search_cost
    from assay.cost import load_catalogue

    catalogue = load_catalogue(Path(targets) if targets else None)
    if search is not None:
        path = Path(search)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UsageError(f"search={str(search)!r}: not a readable JSON document ({e}).") from None
    else:
        ws = open_workspace(home)
        try:
            path, document = latest_search(ws, model)
        finally:
            ws.store.close()
    return {"model": model, "search": str(path), **search_cost(document, catalogue)}


def rollback(
    model: str, *, alias: str = "production", reason: str | None = None, home: str | Path | None = None
) -> AliasChange:
    """Undo the newest promotion of ``alias`` of ``model`` still in effect."""
    return open_workspace(home).store.rollback(model, alias, reason=reason)
