"""Language models in the release loop (the LLM stage of DESIGN.md section 8).

So far: :mod:`assay.llm.lmeval`, lm-evaluation-harness per-sample logs read as per-example outputs, so
two models evaluated by lm-eval are gated paired by assay.
"""
