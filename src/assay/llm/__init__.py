"""Language models in the release loop (the LLM stage of DESIGN.md section 8): the door in
(:mod:`~assay.llm.causal`), evaluation with intervals (:mod:`~assay.llm.perplexity`,
:mod:`~assay.llm.tasks`, :mod:`~assay.llm.generation`), the gate and cheaper variants
(:mod:`~assay.llm.release`, :mod:`~assay.llm.search`), decoding (:mod:`~assay.llm.decoding`), and
lm-evaluation-harness per-sample logs read for the paired gate (:mod:`~assay.llm.lmeval`).
"""
