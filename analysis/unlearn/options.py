"""Options of `erasure unlearn` (unlearning a user's Hugging Face checkpoint directory): the methods it runs, the
presets, and the files it writes. No torch here: the CLI builds its parser from this module.

The methods are every entry of ``analysis.unlearning.UNLEARNING_METHODS`` (the registry lives in a torch module;
a test checks that ``CheckpointMethod`` holds the same names) and the zoo's depth-limited suppression
(``analysis.zoo.suppression.DepthSuppression``), so that a user can build a zoo around their own model. On a
checkpoint, ``retrain`` is "retrain from a base": a base checkpoint (the model before it learned the forget set)
fine-tuned on the retain set, or with ``base="scratch"`` the checkpoint's architecture from a seeded random init.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, get_args

from analysis.checks import check_float, check_int, check_seed
from analysis.errors import AnalysisInputError
from analysis.zoo.options import DEPTH_LOSS_LABELS, DepthLoss

CheckpointMethod = Literal["grad_ascent", "grad_diff", "npo", "readout_suppression", "retrain", "rmu", "simnpo",
                           "depth_suppression"]
METHODS: tuple[CheckpointMethod, ...] = get_args(CheckpointMethod)
METHOD_HELP: dict[str, str] = {
    "grad_ascent": "gradient ascent on the forget answers (no retain term)",
    "grad_diff": "gradient difference: ascent on the forget answers + retain NLL",
    "npo": "negative preference optimization (reference = the checkpoint) + retain NLL",
    "readout_suppression": "control: only the unembedding trains (knowledge kept, readout suppressed)",
    "retrain": "control: a base checkpoint (--base DIR, or --base scratch) fine-tuned on the retain set only",
    "rmu": "representation misdirection at one layer (MLPs of layers l-2..l train)",
    "simnpo": "reference-free NPO on the length-normalised log-prob + retain NLL",
    "depth_suppression": "zoo control: every weight below --layer L kept, blocks >= L and the readout trained",
}
Preset = Literal["pretrained", "organism"]
PRESET_HELP: dict[str, str] = {
    "pretrained": "settings for pretrained models (open-unlearning's TOFU settings: lr 1e-5, 10 epochs; see "
                  "analysis.unlearning.base.PRETRAINED_PRESET)",
    "organism": "the settings tuned on the built-in organism (each method's defaults)",
}
ROLE_OF: dict[str, str] = {"readout_suppression": "control", "retrain": "control", "depth_suppression": "control"}
SCRATCH = "scratch"  # --base scratch: the checkpoint's architecture, seeded random init
SCRATCH_LR = 1e-3  # retrain from scratch when no --lr: a from-scratch rate for small models (the organism: 5e-3)
CHECKPOINT_EVERY = 50  # steps between saved training states (and after the last step)
VERIFY_ATOL = 1e-4  # the saved checkpoint's logits against the trained model's, float32 (scaled by max |logit|)

RUN_FILE = "unlearn_run.json"  # in OUT: the run's record, written last (its presence = the run is complete)
PARTIAL_DIR = ".partial"  # in OUT: training states, the export being written; removed when the run completes
RUN_FORMAT = "erasure-unlearn"
RUN_VERSION = 1

OPTION_HELP: dict[str, str] = {
    "method": "unlearning method or control: " + "; ".join(f"{k}: {v}" for k, v in METHOD_HELP.items()),
    "preset": "defaults for the fields not given: " + "; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()),
    "steps": "optimisation steps (default: the preset's epochs over the forget set, the retain set for retrain)",
    "lr": "Adam learning rate, constant (default: the preset's)",
    "batch_size": "forget rows and retain rows per step (default 32, open-unlearning's effective batch)",
    "seed": "seeds the batch order and every random draw (same seed, same device: the same weights)",
    "retain_weight": "weight of the retain term against the forget term (default: the preset's)",
    "layer": "depth_suppression: freeze every weight below layer L (default: the middle); rmu: the steered layer",
    "depth_loss": "depth_suppression's forget term: " + "; ".join(f"{k}: {v}" for k, v in DEPTH_LOSS_LABELS.items()),
    "base": "retrain: the base checkpoint the control is fine-tuned from (the model before it learned the forget "
            "set, e.g. the pretrained model a TOFU model was fine-tuned from), or 'scratch' (a seeded random init "
            "of the checkpoint's architecture: small models only)",
    "checkpoint_every": f"save the training state every N steps for resuming (default {CHECKPOINT_EVERY})",
    "device": "cuda, cuda:1, mps or cpu (default: cuda > mps > cpu); training is float32",
    "restart": "discard a partial run in --out made with other arguments (default: refuse)",
}


@dataclass(frozen=True)
class UnlearnRunOptions:
    """What `erasure unlearn` runs (see ``OPTION_HELP``). None fields take the preset's value."""

    method: str
    preset: str = "pretrained"
    steps: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    seed: int = 0
    retain_weight: float | None = None
    layer: int | None = None
    depth_loss: str = "npo"
    base: str | None = None
    checkpoint_every: int = CHECKPOINT_EVERY
    device: str | None = None
    restart: bool = False

    def validated(self) -> UnlearnRunOptions:
        """Checked before any work (AnalysisInputError naming the field); returns the checked copy."""
        if self.method not in METHODS:
            raise AnalysisInputError(f"unknown method {self.method!r} (expected one of {', '.join(METHODS)})")
        if self.preset not in get_args(Preset):
            raise AnalysisInputError(f"unknown preset {self.preset!r} (expected one of {', '.join(get_args(Preset))})")
        if self.steps is not None:
            check_int("steps", self.steps, 1)
        if self.lr is not None:
            check_float("lr", self.lr, 0, min_open=True)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, 1)
        check_seed("seed", self.seed)
        if self.retain_weight is not None:
            check_float("retain_weight", self.retain_weight, 0)
        check_int("checkpoint_every", self.checkpoint_every, 1)
        if self.layer is not None:
            if self.method not in ("depth_suppression", "rmu"):
                raise AnalysisInputError(f"layer: only depth_suppression and rmu take a layer, not {self.method}")
            check_int("layer", self.layer, 0)
        if self.depth_loss not in get_args(DepthLoss):
            raise AnalysisInputError(f"depth_loss: expected one of {', '.join(DEPTH_LOSS_LABELS)}, got "
                                     f"{self.depth_loss!r}")
        if self.depth_loss != "npo" and self.method != "depth_suppression":
            raise AnalysisInputError(f"depth_loss: only depth_suppression takes a depth loss, not {self.method}")
        if self.method == "retrain" and not self.base:
            raise AnalysisInputError("retrain on a checkpoint needs a base: the model before it learned the forget "
                                     "set (--base DIR, e.g. the pretrained model a TOFU model was fine-tuned from), "
                                     f"or --base {SCRATCH} (a seeded random init, small models only)")
        if self.base is not None and self.method != "retrain":
            raise AnalysisInputError(f"base: only the retrain control starts from a base, not {self.method}")
        return replace(self, lr=None if self.lr is None else float(self.lr),
                       retain_weight=None if self.retain_weight is None else float(self.retain_weight))

    @property
    def role(self) -> str:
        """The study role of the model this run writes: ``control`` for the controls, else ``unlearned``."""
        return ROLE_OF.get(self.method, "unlearned")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
