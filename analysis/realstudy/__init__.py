"""The real-model study (issue 17): SmolLM2-135M, fictitious facts fine-tuned in (TOFU-style ground truth), the
retrain control, the five unlearning methods with the pretrained preset, the zoo around it, and the model's own
real knowledge as a second sample set. `erasure demo --model smollm2 [--small]`.

Rooms: ``options`` (RealStudyOptions, the DEFAULT and SMALL sizes, the stages; no torch), ``samples`` (the corpus
in natural English, the fine-tune's training rows, the curated known facts and their top-1 filter), ``zoo`` (the
zoo members that make sense on a pretrained model, and the ones that do not), ``build`` (build_real_study:
cached and resumable stage by stage).

The public names below load their module on first use (analysis.lazy), so that ``analysis.realstudy.options``
does not import torch (the CLI builds its parser from it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.lazy import lazy_exports

_M = "analysis.realstudy."
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["DEFAULT", "SMALL", "STAGES", "RealStudyOptions", "preset"], _M + "options"),
    **dict.fromkeys(["keep_known", "known_facts", "render_corpus", "training_rows"], _M + "samples"),
    **dict.fromkeys(["NOT_BUILT"], _M + "zoo"),
    **dict.fromkeys(["RealBuild", "build_real_study", "real_study_complete"], _M + "build"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from analysis.realstudy.build import RealBuild, build_real_study, real_study_complete
    from analysis.realstudy.options import DEFAULT, SMALL, STAGES, RealStudyOptions, preset
    from analysis.realstudy.samples import keep_known, known_facts, render_corpus, training_rows
    from analysis.realstudy.zoo import NOT_BUILT

__all__ = ["DEFAULT", "NOT_BUILT", "SMALL", "STAGES", "RealBuild", "RealStudyOptions", "build", "build_real_study",
           "keep_known", "known_facts", "options", "preset", "real_study_complete", "render_corpus", "samples",
           "training_rows", "zoo"]
