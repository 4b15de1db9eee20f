"""Options of the relearning attack: how many fine-tuning steps, the learning rate, the seed, how many retain
rows the retain-only variant trains on; the variants and their labels that both the CLI and the app read; the
store kind. No torch here (the CLI builds its parser from this module)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from analysis.checks import check_float, check_int, check_seed

# The two attacks: (a) fine-tune on retain data only (nothing of the forget set is shown), measured on every
# forget sample; (b) fine-tune on one half of the forget set (a seeded split), measured on the other half, both
# folds run so that every forget sample is measured once, held out.
RelearnVariant = Literal["forget", "retain"]
VARIANTS: tuple[RelearnVariant, ...] = get_args(RelearnVariant)
VARIANT_LABELS: dict[str, str] = {
    "forget": "relearn on half the forget set, measured on the other half",
    "retain": "fine-tune on retain data only, measured on the forget set",
}
SIGNAL_VARIANT: RelearnVariant = "forget"  # the variant registered as the "relearn" signal
STORE_KIND = "relearn_attack"  # one row per (attacked model, attack job): held-out correctness after each step
OPTIONS_VERSION = 1
MAX_STEPS = 1000  # the attack is meant to be short: a bound, so that a typo cannot start an hour of training

STEPS_HELP = "fine-tuning steps of each attack (full batch: the whole training half per step; default 30)"
LR_HELP = "Adam learning rate of the attack (constant, no weight decay; default 1e-4)"
RETAIN_ROWS_HELP = ("retain samples the retain-only attack trains on (a seeded subset, the whole subset every "
                    "step; default 64)")


@dataclass(frozen=True)
class RelearnOptions:
    """Everything that changes the numbers of a relearning attack (and so the key it is stored under).

    ``steps`` full-batch Adam steps at a constant ``lr`` (no weight decay, gradient norm clipped to
    ``max_grad_norm``) minimising the mean length-normalised answer NLL of the training rows; ``seed`` picks the
    forget split and the retain subset (and seeds torch, although the attack itself draws nothing);
    ``retain_rows`` retain samples for the retain-only variant (all of them when the study has fewer).

    The defaults were calibrated on the demo's organism (small study, 30 steps): at lr 1e-4 the attack leaves
    the original's held-out forget accuracy at 1.00 while RMU gives back 0.44 of it; at 2e-4 the original already
    drops to 0.94 and at 1e-3 to 0.38 (the attack then overwrites what it should reveal)."""

    steps: int = 30
    lr: float = 1e-4
    seed: int = 0
    retain_rows: int = 64
    max_grad_norm: float = 1.0

    def validated(self) -> RelearnOptions:
        """Checked (AnalysisInputError naming the field). ``steps`` may be 0 (the model as it is)."""
        return replace(self, steps=check_int("steps (attack fine-tuning steps)", self.steps, 0, MAX_STEPS),
                       lr=check_float("lr (attack learning rate)", self.lr, 0, min_open=True),
                       seed=check_seed("seed", self.seed),
                       retain_rows=check_int("retain_rows (retain samples of the retain-only attack)",
                                             self.retain_rows, 1),
                       max_grad_norm=check_float("max_grad_norm", self.max_grad_norm, 0, min_open=True))

    def key(self) -> dict[str, Any]:
        """The store key (of validated options): every field changes the numbers."""
        return {"version": OPTIONS_VERSION, "steps": self.steps, "lr": float(self.lr), "seed": self.seed,
                "retain_rows": self.retain_rows, "max_grad_norm": float(self.max_grad_norm)}
