"""Options of the zoo (the models whose knowledge is known by construction), its member kinds and their labels,
the statuses a member can have, and where the zoo is recorded. No torch here: the CLI builds its parser from
this module.

- ``ZooOptions``: how many members of each kind and how they are trained. What it resolves to (seeds, layers,
  steps) is written into each member's recipe, and a member is rebuilt only when its recipe changes.
- ``MemberKind``: the recipes of :mod:`analysis.zoo.members` (the ``MEMBER_KINDS`` registry holds the same
  names; a test checks it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from analysis.checks import check_float, check_int
from analysis.errors import AnalysisInputError

MANIFEST_KEY = "zoo"  # study.manifest.extra["zoo"][name] = a ZooMember's record
PROBE_KEY = "zoo_probe"  # study.manifest.extra["zoo_probe"]: the original's probe accuracy per layer, by fingerprint
PREFIX = "zoo_"  # every model the zoo trains is named zoo_...
RECIPE_VERSION = 1  # part of every recipe: bump when a recipe's training changes, so its members are rebuilt

# ---- statuses --------------------------------------------------------------------------------------------
ZooStatus = Literal["present", "absent", "excluded"]
STATUSES: tuple[ZooStatus, ...] = ("present", "absent", "excluded")
STATUS_LABELS: dict[ZooStatus, str] = {
    "present": "knowledge present but hidden (P)",
    "absent": "knowledge absent (N)",
    "excluded": "left out: its status could not be shown by construction",
}

# ---- member kinds (analysis.zoo.members.MEMBER_KINDS) ------------------------------------------------------
MemberKind = Literal["retrain", "retrain_unlearned", "readout", "depth", "decoy", "mimic", "twin"]
MEMBER_KIND_LABELS: dict[MemberKind, str] = {
    "retrain": "retrained from scratch without the forget facts (own seed)",
    "retrain_unlearned": "never knew, then unlearned: a zoo retrain put through an unlearning method",
    "readout": "readout-only suppression: only the unembedding changed",
    "depth": "depth-limited suppression: every weight below layer L is the original's",
    "decoy": "depth-limited decoy: forget prompts redirected to another value of the relation",
    "mimic": "depth-limited mimic: forget prompts answered as a zoo retrain answers them (output looks like N)",
    "twin": "twin suppression: an original of its own seed (all facts), then depth-limited suppression (P in "
            "another residual basis)",
}
MEMBER_STATUS: dict[MemberKind, ZooStatus] = {"retrain": "absent", "retrain_unlearned": "absent",
                                               "readout": "present", "depth": "present", "decoy": "present",
                                               "mimic": "present", "twin": "present"}
DepthLoss = Literal["npo", "grad_diff"]
DEPTH_LOSS_LABELS: dict[DepthLoss, str] = {
    "npo": "NPO on the forget answers (bounded) + retain NLL",
    "grad_diff": "gradient difference: ascent on the forget answers' NLL + retain NLL",
}
DEPTH_LOSS_SUFFIX: dict[DepthLoss, str] = {"npo": "", "grad_diff": "_gd"}

ZOO_OPTION_HELP: dict[str, str] = {
    "retrain_seed_offsets": "one retrain per offset, seeded study seed + offset (distinct from the reference)",
    "twin_seed_offset": "the twin original (trained on every fact) is seeded study seed + this; 0 = no twin",
    "unlearn_methods": "unlearning methods applied to the zoo's retrains (never knew, then unlearned)",
    "depth_layers": "L of the depth-limited suppressions (default: spread over the depth)",
    "depth_losses": "forget losses of the depth-limited suppressions (one member per layer and loss)",
    "decoy_layer": "L of the decoy and the mimic (default: the middle layer, or the nearest one whose probe "
                   "passes)",
    "unlearn_steps": "optimisation steps of every fine-tuned member (default: each recipe's own)",
    "retrain_steps": "training steps of the retrains (default: the original organism's recipe)",
    "probe_threshold": "a P member counts only if a retain-trained probe decodes this share of the forget "
                       "answers from the original at its last frozen layer",
    "max_forget_acc": "a suppression counts only if its forget accuracy is at most this",
    "min_retain_kept": "a suppression counts only if it keeps this share of the original's retain accuracy",
}

RETRAIN_SEED_OFFSETS: tuple[int, ...] = (101, 102, 103)
TWIN_SEED_OFFSET = 201
UNLEARN_METHODS: tuple[str, ...] = ("npo", "rmu")  # applied to the first, second, ... zoo retrain
DEPTH_LOSSES: tuple[DepthLoss, ...] = ("npo", "grad_diff")
PROBE_THRESHOLD = 0.8
MAX_FORGET_ACC = 0.25
MIN_RETAIN_KEPT = 0.9


def spread_layers(n_layers: int) -> tuple[int, ...]:
    """Depths L (1 <= L < n_layers) spread over the model: early, middle, late (quartiles); for 4 layers 1, 2, 3."""
    if n_layers < 2:
        raise AnalysisInputError(f"a depth-limited suppression needs at least 2 layers, the model has {n_layers}")
    picks = {min(n_layers - 1, max(1, round(n_layers * q / 4))) for q in (1, 2, 3)}
    return tuple(sorted(picks))


@dataclass(frozen=True)
class ZooOptions:
    """What the zoo builds (see ``ZOO_OPTION_HELP``). ``None`` fields are resolved per study (the resolved
    values are what a member's recipe records)."""

    retrain_seed_offsets: tuple[int, ...] = RETRAIN_SEED_OFFSETS
    twin_seed_offset: int = TWIN_SEED_OFFSET
    unlearn_methods: tuple[str, ...] = UNLEARN_METHODS
    depth_layers: tuple[int, ...] | None = None
    depth_losses: tuple[DepthLoss, ...] = DEPTH_LOSSES
    decoy_layer: int | None = None
    unlearn_steps: int | None = None
    retrain_steps: int | None = None
    probe_threshold: float = PROBE_THRESHOLD
    max_forget_acc: float = MAX_FORGET_ACC
    min_retain_kept: float = MIN_RETAIN_KEPT

    def validated(self) -> ZooOptions:
        """Checked before any work (AnalysisInputError naming the field); returns self."""
        offsets = tuple(self.retrain_seed_offsets)
        if not offsets:
            raise AnalysisInputError("retrain_seed_offsets: expected at least one seed offset")
        for o in offsets:
            check_int("retrain_seed_offsets", o, 1)
        if len(set(offsets)) != len(offsets):
            raise AnalysisInputError(f"retrain_seed_offsets: expected distinct offsets, got {list(offsets)}")
        check_int("twin_seed_offset", self.twin_seed_offset, 0)
        if self.twin_seed_offset in offsets:
            raise AnalysisInputError(f"twin_seed_offset: {self.twin_seed_offset} is also a retrain seed offset")
        if len(self.unlearn_methods) > len(offsets):
            raise AnalysisInputError(f"unlearn_methods: at most one per zoo retrain ({len(offsets)}), got "
                                     f"{len(self.unlearn_methods)}")
        for m in self.unlearn_methods:
            if m in ("retrain", "readout_suppression"):
                raise AnalysisInputError(f"unlearn_methods: {m!r} is a control, not an unlearning method")
        if self.depth_layers is not None:
            for layer in self.depth_layers:
                check_int("depth_layers", layer, 1)
        if not self.depth_losses or any(x not in DEPTH_LOSS_LABELS for x in self.depth_losses):
            raise AnalysisInputError(f"depth_losses: expected some of {', '.join(DEPTH_LOSS_LABELS)}, got "
                                     f"{list(self.depth_losses)}")
        if self.decoy_layer is not None:
            check_int("decoy_layer", self.decoy_layer, 1)
        if self.unlearn_steps is not None:
            check_int("unlearn_steps", self.unlearn_steps, 1)
        if self.retrain_steps is not None:
            check_int("retrain_steps", self.retrain_steps, 1)
        check_float("probe_threshold", self.probe_threshold, 0, 1)
        check_float("max_forget_acc", self.max_forget_acc, 0, 1)
        check_float("min_retain_kept", self.min_retain_kept, 0, 1)
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
