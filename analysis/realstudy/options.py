"""Options of the real-model study (`erasure demo --model smollm2 [--small]`): its sizes, the stages of its build
and where each stage keeps its output. No torch here: the CLI builds its parser from this module.

The sizes (``RealStudyOptions``) decide the weights; the build records them in the manifest
(``manifest.extra["real_study"]["options"]``) and refuses to resume a study built with other ones.
``DEFAULT`` is the full build, sized to fit 60 minutes on a 2-core CPU; ``SMALL`` is the pipeline at toy scale for
the tests (a few facts, a few steps: it need not learn the facts well). Why the defaults are what they are is
said on each field below and in docs/REAL_MODEL.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, get_args

from analysis.checks import check_float, check_int, check_seed
from analysis.errors import AnalysisInputError

RealModel = Literal["smollm2"]  # the packaged models a real study can be built on (analysis.models.gguf)
REAL_MODELS: tuple[str, ...] = get_args(RealModel)
Stage = Literal["base", "samples", "original", "study", "retrain", "methods", "zoo", "evaluate"]
STAGES: tuple[Stage, ...] = get_args(Stage)
STAGE_LABELS: dict[Stage, str] = {
    "base": "the pretrained checkpoint (converted from the packaged GGUF once)",
    "samples": "fictitious facts in natural English; the curated real facts the base gets top-1 right",
    "original": "the original: the base fine-tuned on every fictitious fact",
    "study": "the study (its samples and the original)",
    "retrain": "the retrain control: the base fine-tuned on the retain facts only (same steps, rate, seed)",
    "methods": "the five unlearning methods and the readout control, pretrained preset",
    "zoo": "the zoo: retrains of other seeds, a retrain then unlearned, depth-limited suppressions",
    "evaluate": "the scoreboard of every study model",
}
# Rough share of build time per stage (one progress bar over the build); the zoo and methods dominate.
STAGE_WEIGHTS: dict[Stage, float] = {"base": 0.03, "samples": 0.02, "original": 0.17, "study": 0.01,
                                     "retrain": 0.15, "methods": 0.27, "zoo": 0.28, "evaluate": 0.07}
UNLEARN_METHODS: tuple[str, ...] = ("grad_ascent", "grad_diff", "npo", "simnpo", "rmu")
CONTROLS: tuple[str, ...] = ("readout_suppression",)  # trained from the original; the retrain has its stage
RETRAIN_NAME = "retrain"
MANIFEST_KEY = "real_study"  # study.manifest.extra["real_study"]: model, options, base, stage records
SAMPLES_RECORD = "build/samples.json"  # in the study: the sample stage's key and the curated-facts filter


@dataclass(frozen=True)
class RealStudyOptions:
    """What the real study builds. ``None`` fields take the pretrained preset's value
    (``analysis.unlearning.base.PRETRAINED_PRESET``)."""

    model: str = "smollm2"  # the packaged model (analysis.models.gguf.KNOWN_MODELS)
    seed: int = 0
    n_people: int = 40  # fictitious people, 4 facts each (analysis.data.corpus.build_corpus)
    forget_fraction: float = 0.1  # TOFU forget10: every fact of 10% of the people
    # The fine-tunes (the original, the retrain control, the zoo's retrains): measured on SmolLM2 with 48 facts,
    # batch 16, lr 1e-4 recalls 0.73 / 0.88 / 1.0 of them after 4 / 5 / 6 epochs (lr 3e-4 is no faster and wipes
    # out its real knowledge: 0.88 -> 0.03 of the curated facts; 1e-4 keeps 0.5). With 160 facts 6 epochs (60
    # steps) recall only 0.69 (the facts interfere): 10 epochs, 100 steps.
    train_templates: int = 1  # training templates per fact in the fine-tunes (1 = the canonical prompt)
    finetune_steps: int = 100
    finetune_lr: float = 1e-4
    finetune_batch: int = 16
    # The methods: the preset's lr and 10 epochs over the forget set; a batch of 8 (not TOFU's 32, which would
    # be the whole 16-fact forget set: 1 step an epoch) gives 20 steps.
    method_steps: int | None = None
    method_batch: int | None = 8
    methods: tuple[str, ...] = UNLEARN_METHODS  # the unlearning methods run from the original (all five by default)
    zoo_retrain_seeds: tuple[int, ...] = (101,)  # seed offsets of the zoo's retrains (N)
    zoo_unlearned: tuple[str, ...] = ("npo",)  # methods applied to the first zoo retrains (N: never knew)
    # The readout member (the final norm and the unembedding trained, every other weight the original's): the
    # study's readout control uses the preset's 1e-4, which on SmolLM2 hides none of the forget answers in 20 steps
    # (forget accuracy 1.0 after); 3e-4 hides few (0.81 still answered); 1e-3 hides them (0.06) but takes retain
    # accuracy to 0.77 (< 0.9 x 0.96) with the retain term at weight 1; at weight 5, 20 steps leave 0.31 answered
    # (retain 0.94): 1e-3, weight 5, 40 steps.
    zoo_readout_lr: float = 1e-3
    zoo_readout_retain_weight: float = 5.0
    zoo_readout_steps: int | None = 40
    zoo_readout_seeds: tuple[int, ...] = (0, 1)  # seed offsets of the readout members (zoo_readout, zoo_readout_2)
    zoo_depth_layers: tuple[int, ...] | None = None  # None: 3n/4 and n-2 (zoo.depth_layers)
    zoo_depth_lr: float = 1e-4  # 10x the preset's: a P member must hide the answers (forget accuracy <= 0.25)
    zoo_depth_steps: int | None = None  # None: as the methods
    evaluate: bool = True

    def validated(self) -> RealStudyOptions:
        """Checked before any work (AnalysisInputError naming the field); returns self."""
        if self.model not in REAL_MODELS:
            raise AnalysisInputError(f"model: expected one of {', '.join(REAL_MODELS)}, got {self.model!r}")
        check_seed("seed", self.seed)
        check_int("n_people", self.n_people, 10)
        check_float("forget_fraction", self.forget_fraction, 0, 0.5, min_open=True)
        check_int("train_templates", self.train_templates, 1, 3)
        check_int("finetune_steps", self.finetune_steps, 1)
        check_float("finetune_lr", self.finetune_lr, 0, min_open=True)
        check_int("finetune_batch", self.finetune_batch, 1)
        if not self.methods or len(set(self.methods)) != len(self.methods) or \
                any(m not in UNLEARN_METHODS for m in self.methods):
            raise AnalysisInputError(f"methods: expected distinct names among {', '.join(UNLEARN_METHODS)}, "
                                     f"got {list(self.methods)}")
        if self.method_steps is not None:
            check_int("method_steps", self.method_steps, 1)
        if self.method_batch is not None:
            check_int("method_batch", self.method_batch, 1)
        for o in self.zoo_retrain_seeds:
            check_int("zoo_retrain_seeds", o, 1)
        if len(set(self.zoo_retrain_seeds)) != len(self.zoo_retrain_seeds):
            raise AnalysisInputError(f"zoo_retrain_seeds: expected distinct offsets, got {list(self.zoo_retrain_seeds)}")
        if len(self.zoo_unlearned) > len(self.zoo_retrain_seeds):
            raise AnalysisInputError(f"zoo_unlearned: at most one per zoo retrain ({len(self.zoo_retrain_seeds)}), "
                                     f"got {len(self.zoo_unlearned)}")
        for m in self.zoo_unlearned:
            if m not in UNLEARN_METHODS:
                raise AnalysisInputError(f"zoo_unlearned: expected some of {', '.join(UNLEARN_METHODS)}, got {m!r}")
        for layer in self.zoo_depth_layers or ():
            check_int("zoo_depth_layers", layer, 1)
        check_float("zoo_depth_lr", self.zoo_depth_lr, 0, min_open=True)
        check_float("zoo_readout_lr", self.zoo_readout_lr, 0, min_open=True)
        check_float("zoo_readout_retain_weight", self.zoo_readout_retain_weight, 0)
        if not self.zoo_readout_seeds or len(set(self.zoo_readout_seeds)) != len(self.zoo_readout_seeds):
            raise AnalysisInputError(f"zoo_readout_seeds: expected distinct offsets, got {list(self.zoo_readout_seeds)}")
        if self.zoo_readout_steps is not None:
            check_int("zoo_readout_steps", self.zoo_readout_steps, 1)
        if self.zoo_depth_steps is not None:
            check_int("zoo_depth_steps", self.zoo_depth_steps, 1)
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RealStudyOptions:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**fields)


DEFAULT = RealStudyOptions()
# The pipeline at toy scale: 10 people (one forgotten: 4 forget facts, 36 retain), 2 fine-tune steps, 1 step per
# method and zoo member, one depth layer. It does not learn the facts; it exercises every stage.
SMALL = replace(DEFAULT, n_people=10, finetune_steps=2, finetune_batch=8, method_steps=1, method_batch=4,
                zoo_depth_steps=1, zoo_readout_steps=1, evaluate=True)


def preset(small: bool) -> RealStudyOptions:
    """``SMALL`` or ``DEFAULT``."""
    return SMALL if small else DEFAULT


__all__ = ["CONTROLS", "DEFAULT", "MANIFEST_KEY", "REAL_MODELS", "RETRAIN_NAME", "RealModel", "RealStudyOptions",
           "SAMPLES_RECORD", "SMALL", "STAGES", "STAGE_LABELS", "STAGE_WEIGHTS", "Stage", "UNLEARN_METHODS",
           "preset"]
