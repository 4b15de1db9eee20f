"""The fitted verdict: was the knowledge erased or only suppressed? One signal and a boundary fitted on
development zoos (``rule``: ``fit_rule``, ``load_rule``; the rule itself lives in ``rule.json``, versioned),
applied with a bootstrap interval over samples (``judge``: ``judge``, ``judge_reading``), and ``erasure verdict``
(``cli``). Fitted and tested on held-out zoos by ``python -m benchmarks.verdict_fit`` (benchmarks/VERDICT.md)."""
