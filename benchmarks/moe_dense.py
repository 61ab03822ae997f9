"""A small mixture-of-experts language model against a dense one of equal active parameters.

Both are Llama-style decoders of the same width and depth, trained from the same seed on the same
batches of Debian's fortunes (the training split, packed into windows) with MiniLM's tokenizer, for the
same number of steps. The dense model's MLP has an intermediate size of 2F; the MoE routes each token to
2 of 8 experts of size F (Mixtral's layout), so a token computes with the same MLP parameters in both
(the MoE adds its router). Printed, with the hardware line:

    parameters in total and active per token (assay.llm.moe's accounting, checked against the models);
    quality: NLL per token on the held-out test fortunes, each with its 95% interval over documents, and
        the MoE's difference from the dense model paired on the same documents;
    decoding: greedy tokens/s at batch 1 and at batch 16, weight bytes, and each model's bandwidth limit
        (the MoE's from the experts a batch touches).

    python benchmarks/moe_dense.py                 # 200 steps each, about 15 minutes on 2 cores
    python benchmarks/moe_dense.py --steps 20      # a smoke run
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

from assay.cost.machine import memory_bandwidth
from assay.data import load_dataset, parse_data_arg
from assay.env import cpu_info, package_versions
from assay.llm import causal
from assay.llm.decoding import GreedyDecoder
from assay.llm.moe import MoEShape
from assay.llm.perplexity import score_documents
from assay.models.heads import packaged_minilm
from assay.stats import bootstrap_ci

WIDTH, LAYERS, HEADS, KV_HEADS, EXPERT = 128, 4, 4, 2, 256
EXPERTS, TOP_K = 8, 2
CONTEXT = 256


def models(vocab: int) -> dict[str, torch.nn.Module]:
    shared = {"vocab_size": vocab, "hidden_size": WIDTH, "num_hidden_layers": LAYERS,
              "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
              "max_position_embeddings": CONTEXT, "tie_word_embeddings": True}  # fmt: skip
    torch.manual_seed(0)
    dense = LlamaForCausalLM(LlamaConfig(**shared, intermediate_size=TOP_K * EXPERT))
    torch.manual_seed(0)
    routed = {"num_local_experts": EXPERTS, "num_experts_per_tok": TOP_K, "output_router_logits": True,
              "router_aux_loss_coef": 0.01}  # fmt: skip
    moe = MixtralForCausalLM(MixtralConfig(**shared, intermediate_size=EXPERT, **routed))
    return {"dense": dense, "moe": moe}


def windows(tokenizer: object, texts: list[str], length: int) -> torch.Tensor:
    """The training texts tokenized, joined by the separator and cut into windows of ``length`` tokens."""
    ids: list[int] = []
    for text in texts:
        ids += list(tokenizer(text)["input_ids"])  # type: ignore[operator]
    n = len(ids) // length
    return torch.tensor(ids[: n * length]).view(n, length)


def train(model: torch.nn.Module, data: torch.Tensor, steps: int, batch: int) -> float:
    """AdamW at 2e-3 with 20 warm-up steps, the same seeded order of windows for every model; seconds."""
    generator = torch.Generator().manual_seed(1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20))
    model.train()
    started = time.perf_counter()
    for step in range(steps):
        rows = torch.randint(0, len(data), (batch,), generator=generator)
        loss = model(input_ids=data[rows], labels=data[rows]).loss  # Mixtral adds its load-balancing loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  step {step:>4} loss {loss.item():.3f}", flush=True)
    model.eval()
    return time.perf_counter() - started


def decode_rate(lm: causal.LanguageModel, prompt: list[int], batch: int) -> float:
    decoder = GreedyDecoder(lm, "dynamic", max_context=CONTEXT)
    decoder.run([prompt] * batch, 4)  # warm-up
    return max(decoder.run([prompt] * batch, 48).tokens_per_second for _ in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--documents", type=int, default=400, help="held-out test fortunes scored")
    args = parser.parse_args()
    torch.manual_seed(0)
    cpu = cpu_info()
    print(f"hardware: {cpu['model']}, {torch.get_num_threads()} threads, flags {', '.join(cpu['flags'])}; "
          f"torch {package_versions()['torch']}")  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(packaged_minilm())
    data = load_dataset(parse_data_arg("fortunes"))
    train_windows = windows(tokenizer, [str(t) for t in data.train.x], args.length)
    texts = [str(t) for t in data.test.x[: args.documents]]
    print(
        f"corpus: {len(train_windows)} training windows of {args.length} tokens; {len(texts)} test documents"
    )
    bandwidth = memory_bandwidth() / 1e9
    built = models(len(tokenizer))
    shape = MoEShape.from_config(built["moe"].config.to_dict())
    dense_parameters = sum(p.numel() for p in built["dense"].parameters())
    assert shape.total() == sum(p.numel() for p in built["moe"].parameters())
    prompt = list(tokenizer("the man who goes alone can start today")["input_ids"])[:8]
    scores, rows = {}, []
    for name, model in built.items():
        print(f"training {name} ({args.steps} steps of {args.batch} x {args.length} tokens)")
        seconds = train(model, train_windows, args.steps, args.batch)
        scores[name] = score_documents(model, tokenizer, texts, max_length=CONTEXT)
        nll = scores[name].measurements(seed=0)[0]
        lm = causal.LanguageModel(
            model, tokenizer, {"precision": "fp32", "spec": {"context_length": CONTEXT}}
        )
        rates = {b: decode_rate(lm, prompt, b) for b in (1, 16)}
        weights = causal.weight_bytes(model)
        if name == "moe":
            limits = {b: shape.roofline(b, bandwidth, 4)["limit_tokens_per_second"] for b in (1, 16)}
            total, active = shape.total(), shape.active()
        else:
            limits = {b: bandwidth * 1e9 * b / weights for b in (1, 16)}  # the tied embedding is the head
            total = active = dense_parameters
        rows.append((name, total, active, seconds, nll, rates, weights, limits))
    print(f"\nmeasured bandwidth {bandwidth:.1f} GB/s")
    print(f"{'model':<6} {'params':>9} {'active':>9} {'train s':>8} {'NLL/token [95% CI]':>24} "
          f"{'tok/s b1':>9} {'limit b1':>9} {'tok/s b16':>10} {'limit b16':>10} {'MiB':>6}")  # fmt: skip
    for name, total, active, seconds, nll, rates, weights, limits in rows:
        interval = f"{nll.value:.3f} [{nll.ci_low:.3f}, {nll.ci_high:.3f}]"
        print(f"{name:<6} {total / 1e6:>8.2f}M {active / 1e6:>8.2f}M {seconds:>8.0f} {interval:>24} "
              f"{rates[1]:>9.1f} {limits[1]:>9.0f} {rates[16]:>10.1f} {limits[16]:>10.0f} "
              f"{weights / 2**20:>6.1f}")  # fmt: skip
    moe, dense = scores["moe"], scores["dense"]
    assert list(moe.ids) == list(dense.ids)  # the same documents, so the difference is paired

    def difference(idx: np.ndarray) -> np.ndarray:
        return moe.replicates("nll_per_token", idx) - dense.replicates("nll_per_token", idx)

    paired = bootstrap_ci(difference, len(moe.ids), n_boot=2000, seed=0, vectorized=True)
    print(f"MoE - dense NLL per token, paired over {len(moe.ids)} documents: {paired.estimate:+.4f} "
          f"[{paired.ci_low:+.4f}, {paired.ci_high:+.4f}] nats")  # fmt: skip


if __name__ == "__main__":
    main()
