"""MoE accounting: against transformers' own models (every parameter counted), against hand-computed
figures for published configs, and the expected-experts formula against simulated routing."""

from __future__ import annotations

import numpy as np
import pytest

from assay.errors import UsageError
from assay.llm.moe import MIXTRAL_8X7B, MoEShape, expected_experts

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

TINY = {"hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 101, "num_experts_per_tok": 2}  # fmt: skip


def tiny_models() -> list[tuple[str, object]]:
    return [
        ("mixtral", transformers.MixtralConfig(**TINY, intermediate_size=48, num_local_experts=5)),
        ("olmoe", transformers.OlmoeConfig(**TINY, intermediate_size=40, num_experts=6)),
        (
            "qwen2_moe",
            transformers.Qwen2MoeConfig(
                **TINY, intermediate_size=80, moe_intermediate_size=24, shared_expert_intermediate_size=56,
                num_experts=7, decoder_sparse_step=1, mlp_only_layers=[1],
            ),
        ),
        ("mixtral-tied", transformers.MixtralConfig(**TINY, intermediate_size=48, num_local_experts=4,
                                                    tie_word_embeddings=True)),
    ]  # fmt: skip


@pytest.mark.parametrize(("name", "config"), tiny_models(), ids=[n for n, _ in tiny_models()])
def test_counts_equal_the_parameters_of_transformers_model(name: str, config: object) -> None:
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())  # tied weights once, as parameters() yields them
    experts = sum(p.numel() for n, p in model.named_parameters() if ".mlp.experts." in n)
    shape = MoEShape.from_config(config.to_dict())  # type: ignore[attr-defined]
    assert shape.total() == total
    # Active: of each routed layer's experts, k of E compute for a token.
    assert shape.active() == total - experts * (shape.experts - shape.top_k) // shape.experts
    assert shape.moe_layers * shape.experts * shape.expert() == experts


def test_mixtral_8x7b_by_hand() -> None:
    s = MoEShape.from_config(MIXTRAL_8X7B)
    # Embedding and head: 32,000 x 4,096 = 131,072,000 each. Attention: q and o 4,096^2 = 16,777,216
    # each, k and v 4,096 x 1,024 = 4,194,304 each: 41,943,040 a layer. Norms 2 x 4,096 a layer, 4,096
    # at the end. Router 4,096 x 8 = 32,768. An expert: 3 x 4,096 x 14,336 = 176,160,768.
    per_layer = 41_943_040 + 8_192 + 32_768
    shared = 2 * 131_072_000 + 32 * per_layer + 4_096
    assert s.expert() == 176_160_768
    assert s.shared() == shared == 1_605_636_096
    assert s.total() == shared + 32 * 8 * 176_160_768 == 46_702_792_704  # the model card: 46.7 B
    assert s.active() == shared + 32 * 2 * 176_160_768 == 12_879_925_248  # 12.9 B
    # Batch 1 in bf16: everything but the embedding table, plus 2 experts a layer.
    assert s.bytes_per_step(1, 2) == pytest.approx((shared - 131_072_000 + 64 * 176_160_768) * 2)
    # Batch 4: 8 x (1 - (3/4)^4) = 5.46875 experts a layer.
    assert s.bytes_per_step(4, 2) == pytest.approx((shared - 131_072_000 + 32 * 5.46875 * 176_160_768) * 2)


OLMOE_1B_7B = {  # allenai/OLMoE-1B-7B-0924, config.json
    "model_type": "olmoe", "hidden_size": 2048, "intermediate_size": 1024, "num_hidden_layers": 16,
    "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": 50304, "num_experts": 64,
    "num_experts_per_tok": 8, "tie_word_embeddings": False, "attention_bias": False,
}  # fmt: skip
QWEN15_MOE_A27B = {  # Qwen/Qwen1.5-MoE-A2.7B, config.json
    "model_type": "qwen2_moe", "hidden_size": 2048, "intermediate_size": 5632, "moe_intermediate_size": 1408,
    "shared_expert_intermediate_size": 5632, "num_hidden_layers": 24, "num_attention_heads": 16,
    "num_key_value_heads": 16, "vocab_size": 151936, "num_experts": 60, "num_experts_per_tok": 4,
    "decoder_sparse_step": 1, "mlp_only_layers": [], "tie_word_embeddings": False,
}  # fmt: skip


def test_olmoe_1b_7b_by_hand() -> None:
    s = MoEShape.from_config(OLMOE_1B_7B)
    # Embedding and head 50,304 x 2,048 = 103,022,592 each. Attention 4 x 2,048^2 = 16,777,216, query and
    # key norms 2 x 2,048, layer norms 2 x 2,048, router 2,048 x 64 = 131,072: 16,916,480 a layer.
    # An expert 3 x 2,048 x 1,024 = 6,291,456.
    shared = 2 * 103_022_592 + 16 * 16_916_480 + 2_048
    assert s.total() == shared + 16 * 64 * 6_291_456 == 6_919_161_856  # "OLMoE-1B-7B": 6.9 B
    assert s.active() == shared + 16 * 8 * 6_291_456 == 1_282_017_280  # 1.3 B active


def test_qwen15_moe_a27b_by_hand() -> None:
    s = MoEShape.from_config(QWEN15_MOE_A27B)
    # Embedding and head 151,936 x 2,048 = 311,164,928 each. Attention 4 x 2,048^2 + q, k, v biases
    # 3 x 2,048 = 16,783,360; norms 4,096; router 2,048 x 60 = 122,880; the shared expert
    # 3 x 2,048 x 5,632 = 34,603,008 and its gate 2,048: 51,515,392 a layer. An expert 3 x 2,048 x 1,408.
    shared = 2 * 311_164_928 + 24 * 51_515_392 + 2_048
    expert = 8_650_752
    assert s.total() == shared + 24 * 60 * expert == 14_315_784_192  # the model card: 14.3 B
    assert s.active() == shared + 24 * 4 * expert == 2_689_173_504  # "A2.7B"


def test_expected_experts_matches_simulated_uniform_routing() -> None:
    rng = np.random.default_rng(0)
    trials = 4_000
    for experts, k, batch in ((8, 2, 1), (8, 2, 4), (64, 8, 16), (60, 4, 3)):
        touched = np.array([
            len({int(e) for _ in range(batch) for e in rng.choice(experts, size=k, replace=False)})
            for _ in range(trials)
        ])  # fmt: skip
        # Within 5 standard errors of the simulated mean (the count is bounded, so its sd is at most E/2).
        assert (
            abs(touched.mean() - expected_experts(experts, k, batch))
            < 5 * touched.std() / np.sqrt(trials) + 1e-9
        )
    assert expected_experts(8, 2, 1) == 2.0 and expected_experts(8, 2, 10_000) == pytest.approx(8.0)


def test_roofline_and_refusals() -> None:
    s = MoEShape.from_config(MIXTRAL_8X7B)
    line = s.roofline(1, bandwidth_gb_s=100.0, bytes_per_parameter=2, context=512)
    kv = 2 * 32 * 8 * 128 * 512 * 2
    assert line["bytes_per_token"] == pytest.approx(s.bytes_per_step(1, 2) + kv)
    assert line["limit_tokens_per_second"] == pytest.approx(100e9 / (s.bytes_per_step(1, 2) + kv))
    # Batching raises tokens/s less than a dense model's would: each step touches more experts.
    assert (
        s.roofline(8, 100.0, 2)["limit_tokens_per_second"]
        < 8 * s.roofline(1, 100.0, 2)["limit_tokens_per_second"]
    )
    with pytest.raises(UsageError, match="not a mixture of experts"):
        MoEShape.from_config({"model_type": "llama", "num_attention_heads": 8})
    with pytest.raises(UsageError, match="'deepseek_v3' lays its weights out"):
        MoEShape.from_config({"model_type": "deepseek_v3", "num_experts": 8, "num_experts_per_tok": 2})


def test_cli_prints_the_accounting_and_refuses_bad_input(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from tests.integration.test_cli import invoke

    (tmp_path / "config.json").write_text(json.dumps(OLMOE_1B_7B))
    code, stdout, stderr = invoke(
        "llm", "moe", str(tmp_path), "--bandwidth", "100", "--batches", "1,8", "--json"
    )
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["total"] == 6_919_161_856 and doc["active"] == 1_282_017_280
    s = MoEShape.from_config(OLMOE_1B_7B)
    assert doc["roofline"][1]["limit_tokens_per_second"] == pytest.approx(100e9 * 8 / s.bytes_per_step(8, 2))
    code, stdout, _ = invoke("llm", "moe", str(tmp_path / "config.json"), "--bandwidth", "100")
    assert code == 0 and "6.92 B parameters, 1.28 B active per token (8 of 64 experts" in stdout
    code, _, stderr = invoke("llm", "moe", str(tmp_path), "--batches", "1,x", "--bandwidth", "100")
    assert code == 2 and "give whole numbers" in stderr
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "num_attention_heads": 8}))
    code, _, stderr = invoke("llm", "moe", str(tmp_path), "--bandwidth", "100")
    assert code == 2 and "not a mixture of experts" in stderr and "Traceback" not in stderr
