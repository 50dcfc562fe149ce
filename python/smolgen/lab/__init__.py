"""The lab: tools for deciding whether and how to run a small model, beside the engine.

- :mod:`smolgen.lab.tokens`: the same text through several tokenizers (SmolLM2's, GPT-4's,
  GPT-4o's, your own), with counts, boundaries and a per-language report.
- :mod:`smolgen.lab.cost`: what a workload costs through an API or on a rented GPU, and where
  the two cross.
- :mod:`smolgen.lab.decide`: a decision tree from a workload to a recommendation.

Their commands (``smolgen tokens``, ``cost``, ``decide``) live in :mod:`smolgen.lab.cli`. The
engine never imports the lab; the lab uses only smolgen's public API (the tokenizer, the
benchmark), lazily.
"""
