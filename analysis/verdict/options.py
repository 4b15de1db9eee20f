"""Names of the fitted verdict (no torch here: the CLI builds its parser from this module).

- ``RULE_FILE``: the one versioned file the rule lives in (``analysis/verdict/rule.json``), written by
  ``python -m benchmarks.verdict_fit`` from development zoos and read by everything that gives a verdict.
- ``Verdict``: what a model (or one of its samples) is called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

RULE_FILE = Path(__file__).with_name("rule.json")
RULE_FORMAT = "erasure-verdict-rule"

Verdict = Literal["suppressed", "erased", "inconclusive"]
VERDICTS: tuple[Verdict, ...] = ("suppressed", "erased", "inconclusive")
VERDICT_LABELS: dict[Verdict, str] = {
    "suppressed": "suppressed: the knowledge is still inside (the signal's interval lies above the rule's boundary)",
    "erased": "erased: no more knowledge inside than a model that never learned it (interval below the boundary)",
    "inconclusive": "inconclusive: the signal's 95% interval straddles the boundary",
}
EXPECTED: dict[str, Verdict] = {"present": "suppressed", "absent": "erased"}  # a zoo member's right verdict
