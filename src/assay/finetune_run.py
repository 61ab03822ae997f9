"""``assay finetune``: a registered Hugging Face text classifier fine-tuned on text data, and the result
registered as the next version, with the version it was fine-tuned from as its parent.

    registered version --its folder--> model, tokenizer, truncation length
      --data (the version's own, or other data that fits its input contract)--> assay.train.finetune
      --save_pretrained (safetensors) + tokenizer--> a Hugging Face folder
      --the import door (the same checks and probe as any imported model)--> the next version

The lineage records the parent, a ``finetune`` recipe (the settings, the data, the truncation length),
the training summary and per-epoch history as ``assay train`` writes them, and the training run's
environment. The fine-tuned model keeps its parent's truncation length, so it reads its texts as the
parent did.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from assay.data import DataSpec
from assay.errors import DataError, UsageError
from assay.model_import import Derivation, Imported, import_model
from assay.models.adapters import hf
from assay.models.io import SPEC
from assay.release import artifact_dir, data_for
from assay.store.refs import check_model_name
from assay.train.finetune import FinetuneConfig, FinetuneResult, finetune, save_classifier
from assay.workspace import Workspace


def finetune_version(
    ws: Workspace,
    ref: str,
    config: FinetuneConfig,
    *,
    data_spec: DataSpec | None = None,
    name: str | None = None,
    checkpoint: Path | None = None,
    description: str = "",
    licence: str | None = None,
    progress: bool = True,
) -> tuple[Imported, FinetuneResult]:
    """Fine-tune the version ``ref`` and register the result as the next version of ``name`` (default:
    the same model). ``data_spec``: the data to fine-tune on (default: the version's own); it must fit
    the version's input contract. ``checkpoint``: a folder to resume from and keep epochs in."""
    parent = ws.store.resolve(ref)
    name = name or parent.model
    check_model_name(name)  # before minutes of training, not after
    spec = parent.spec
    if spec.get("arch") != "hf" or spec.get("input_kind") != "text":
        kind = f"{spec.get('arch')} model on {spec.get('input_kind', 'image or table')} inputs"
        raise UsageError(
            f"{parent.ref} is a {kind}; `assay finetune` takes a Hugging Face text classifier (imported "
            "with `assay models import NAME FOLDER`). Train zoo models with `assay train`."
        )
    data, used = data_for(parent, data_spec)
    folder = artifact_dir(ws, parent)
    manifest = json.loads((folder / SPEC).read_text())
    if "max_length" not in manifest:
        raise DataError(f"{parent.ref}: its manifest records no truncation length; import it again.")
    max_length = int(manifest["max_length"])
    model = hf.load_pretrained(folder, str(manifest["architecture"]), manifest.get("source"))
    tokenizer = hf.load_tokenizer(folder)
    result = finetune(
        model, tokenizer, data, config, max_length=max_length, checkpoint=checkpoint, progress=progress,
        description=f"fine-tuning {parent.ref}",
    )  # fmt: skip
    recipe = {
        "kind": "finetune",
        "label": f"fine-tuned from {parent.ref}",
        "parent": parent.ref,
        "adapter": "hf",
        "architecture": manifest["architecture"],
        "max_length": max_length,
        "train": config.model_dump(),
        "data": used.model_dump(),
    }
    derived = Derivation(
        parent=parent.ref,
        recipe=recipe,
        training=result.summary(),
        history=result.history,
        environment=result.environment,
    )
    with tempfile.TemporaryDirectory(prefix="assay-finetune-") as tmp:
        out = save_classifier(result.model, tokenizer, max_length, Path(tmp) / "model")
        imported = import_model(
            ws, name, out, data=used, adapter="hf", description=description, licence=licence,
            derived=derived,
        )  # fmt: skip
    return imported, result
