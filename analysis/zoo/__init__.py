"""The zoo: models of the study whose knowledge of the forget set is known by construction, the ground truth
every signal is measured against (issue 14).

- Knowledge absent (N): retrains from scratch without the forget facts, each with its own seed and none the
  study's reference retrain control, and "never knew, then unlearned" models (a zoo retrain put through an
  unlearning method).
- Knowledge present but hidden (P): the readout-only control, depth-limited suppressions (every weight below
  layer L the original's, only layers >= L and the readout fine-tuned) for L spread over the depth, a decoy
  (forget answers redirected to another value of the relation) and a mimic (forget prompts answered as a zoo
  retrain answers them: chance-level forget accuracy, outputs that look like an N member's). A P member counts
  only if a retain-trained probe decodes the forget answers from the original at its last frozen layer.
- The study's unlearning methods stay "unknown": the zoo is the ruler they are measured against.

Rooms: ``options`` (ZooOptions, member kinds, statuses, labels), ``suppression`` (the depth-limited methods),
``members`` (the MEMBER_KINDS registry: plan and build per kind), ``runner`` (build_zoo: cached, resumable),
``result`` (ZooMember, Zoo, zoo_members), ``cli`` (`erasure zoo`).

The public names below load their module on first use (analysis.lazy), so that ``analysis.zoo.options`` and
``analysis.zoo.cli`` do not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.lazy import lazy_exports

_M = "analysis.zoo."
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["MANIFEST_KEY", "MEMBER_KIND_LABELS", "STATUSES", "STATUS_LABELS", "MemberKind",
                     "ZooOptions", "ZooStatus", "spread_layers"], _M + "options"),
    **dict.fromkeys(["DepthDecoy", "DepthSuppression", "decoy_answers", "frozen_names", "guessed_answers",
                     "is_trained"],
                    _M + "suppression"),
    **dict.fromkeys(["MEMBER_KINDS", "MemberSpec", "ZooContext", "changed_tensors", "plan_members"],
                    _M + "members"),
    **dict.fromkeys(["build_zoo"], _M + "runner"),
    **dict.fromkeys(["Zoo", "ZooMember", "recorded_members", "zoo_members"], _M + "result"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from analysis.zoo.members import MEMBER_KINDS, MemberSpec, ZooContext, changed_tensors, plan_members
    from analysis.zoo.options import (
        MANIFEST_KEY,
        MEMBER_KIND_LABELS,
        STATUS_LABELS,
        STATUSES,
        MemberKind,
        ZooOptions,
        ZooStatus,
        spread_layers,
    )
    from analysis.zoo.result import Zoo, ZooMember, recorded_members, zoo_members
    from analysis.zoo.runner import build_zoo
    from analysis.zoo.suppression import (
        DepthDecoy,
        DepthSuppression,
        decoy_answers,
        frozen_names,
        guessed_answers,
        is_trained,
    )

__all__ = [
    "DepthDecoy",
    "DepthSuppression",
    "MANIFEST_KEY",
    "MEMBER_KINDS",
    "MEMBER_KIND_LABELS",
    "MemberKind",
    "MemberSpec",
    "STATUSES",
    "STATUS_LABELS",
    "Zoo",
    "ZooContext",
    "ZooMember",
    "ZooOptions",
    "ZooStatus",
    "build_zoo",
    "changed_tensors",
    "decoy_answers",
    "frozen_names",
    "guessed_answers",
    "is_trained",
    "members",
    "options",
    "plan_members",
    "recorded_members",
    "result",
    "runner",
    "spread_layers",
    "suppression",
    "zoo_members",
]
