"""Options of the meta-evaluation (``erasure validate``): which signals are scored against the zoo, the bootstrap
of the AUROC, and the two robustness variants built of every zoo member (8-bit weight quantisation and a
short benign fine-tune); the store kinds; the labels and help texts that both the CLI and the app read.

No torch here (the CLI's parser reads this module). The signals themselves live in their own packages and
register in :data:`analysis.signals.SIGNALS` when :data:`SIGNAL_MODULES` are imported
(``analysis.validation.runner.load_signals``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, get_args

from analysis.checks import check_float, check_int, check_seed
from analysis.errors import AnalysisInputError

READING_KIND = "validation_reading"  # one SignalReading per (signal, model): resumable per pair
STORE_KIND = "validation"  # the whole ValidationResult per (members, variants, options)
READING_VERSION = 1  # bump when every adapter's reading changes (every stored reading is recomputed)
# One signal's reading changed: its own version (in its readings' keys and in the key of every result that holds
# it), so only its readings are recomputed. causal_trace 2: the normalised share of the model's own gap (was: the
# raw effect as a fraction of the original's, which read 0 on any model that no longer answers).
SIGNAL_VERSIONS: dict[str, int] = {"causal_trace": 2}
VERSION = 1  # bump when the assembly of a result (AUROC, robustness, placement) changes

# The modules whose import registers signals in analysis.signals.SIGNALS, in the order of the table.
# A module that is not there (yet) is skipped with a note; any other import error is raised.
SIGNAL_MODULES: tuple[str, ...] = (
    "analysis.validation.signals_existing",
    "analysis.patching",
    "analysis.logit_lens",
    "analysis.relearn",
    "analysis.membership",
)

FinetuneSplit = Literal["retain", "utility"]
FINETUNE_SPLITS: tuple[FinetuneSplit, ...] = get_args(FinetuneSplit)
VariantKind = Literal["quantised", "finetuned"]
VARIANT_KINDS: tuple[VariantKind, ...] = get_args(VariantKind)
VARIANT_LABELS: dict[str, str] = {
    "quantised": "8-bit weights (per-tensor symmetric int8 round-trip of every weight matrix)",
    "finetuned": "a short benign fine-tune (a few seeded Adam steps on retain or utility answers)",
}

OPTION_HELP: dict[str, str] = {
    "signals": "comma-separated signal names (default: every registered signal)",
    "n_resamples": "bootstrap resamples of the AUROC interval (P and N members resampled separately)",
    "seed": "seed of the bootstrap and of the benign fine-tune",
    "robustness": "build the quantised and fine-tuned variant of every zoo member and measure how far each "
                  "signal's score moves (UDS-style R / Q / harmonic mean)",
    "quant_bits": "bits of the symmetric per-tensor weight quantisation (8: int8)",
    "finetune_steps": "Adam steps of the benign fine-tune",
    "finetune_lr": "learning rate of the benign fine-tune",
    "finetune_split": "samples the benign fine-tune trains on: retain (other facts) or utility (general ability)",
}

# A signal separates P from N when its AUROC interval lies above 0.5 (reversed: below); strongly at this AUROC.
STRONG_AUROC = 0.9


@dataclass(frozen=True)
class ValidationOptions:
    """What a meta-evaluation computes. ``signals`` None: every signal registered in ``analysis.signals.SIGNALS``
    (after importing :data:`SIGNAL_MODULES`). The fine-tune fields name the benign fine-tune variant (and are in
    its model name); ``quant_bits`` names the quantised variant."""

    signals: tuple[str, ...] | None = None
    n_resamples: int = 1000
    seed: int = 0
    robustness: bool = True
    quant_bits: int = 8
    finetune_steps: int = 10
    finetune_lr: float = 1e-4
    finetune_split: FinetuneSplit = "retain"
    finetune_batch: int = 16

    def validated(self) -> ValidationOptions:
        """Checked and normalised (signals as a tuple of distinct names; registered names are checked by the
        runner, which imports the signals)."""
        signals = self.signals
        if signals is not None:
            if isinstance(signals, str) or not all(isinstance(s, str) and s.strip() for s in signals):
                raise AnalysisInputError(f"signals must be a list of signal names, got {signals!r}")
            signals = tuple(dict.fromkeys(s.strip() for s in signals))
            if not signals:
                raise AnalysisInputError("choose at least one signal (or none for every registered signal)")
        if not isinstance(self.robustness, bool):
            raise AnalysisInputError(f"robustness must be true or false, got {self.robustness!r}")
        if self.finetune_split not in FINETUNE_SPLITS:
            raise AnalysisInputError(f"finetune_split must be one of {', '.join(FINETUNE_SPLITS)}, got "
                                     f"{self.finetune_split!r}")
        return replace(self, signals=signals,
                       n_resamples=check_int("n_resamples (bootstrap resamples)", self.n_resamples, 10),
                       seed=check_seed("seed", self.seed),
                       quant_bits=check_int("quant_bits (quantisation bits)", self.quant_bits, 2, 16),
                       finetune_steps=check_int("finetune_steps (benign fine-tune steps)", self.finetune_steps, 1),
                       finetune_lr=check_float("finetune_lr (learning rate)", self.finetune_lr, 0, min_open=True),
                       finetune_batch=check_int("finetune_batch (rows per step)", self.finetune_batch, 1))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["signals"] = None if self.signals is None else list(self.signals)
        return d

    def quant_recipe(self) -> dict[str, Any]:
        return {"kind": "quantised", "bits": self.quant_bits, "scheme": "per-tensor symmetric, every weight matrix"}

    def finetune_recipe(self) -> dict[str, Any]:
        return {"kind": "finetuned", "steps": self.finetune_steps, "lr": self.finetune_lr,
                "split": self.finetune_split, "batch": self.finetune_batch, "seed": self.seed}

    def key(self, signals: tuple[str, ...]) -> dict[str, Any]:
        """The store key of a result over ``signals`` (the resolved names)."""
        versions = {s: SIGNAL_VERSIONS[s] for s in signals if s in SIGNAL_VERSIONS}
        return {"version": VERSION, "reading_version": READING_VERSION, "signals": list(signals),
                **({"signal_versions": versions} if versions else {}),
                "n_resamples": self.n_resamples, "seed": self.seed, "robustness": self.robustness,
                **({"quant": self.quant_recipe(), "finetune": self.finetune_recipe()} if self.robustness else {})}


def recipe_hash(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:6]


def parse_signals(text: str | None) -> tuple[str, ...] | None:
    """``"a,b"`` -> ("a", "b"); None or blank -> None (every signal)."""
    if text is None or not text.strip():
        return None
    names = [t.strip() for t in text.split(",")]
    if any(not n for n in names):
        raise AnalysisInputError(f"--signals expects comma-separated signal names, got an empty name in {text!r}")
    return tuple(dict.fromkeys(names))
