"""Model loading: every HookedTransformer in the workbench is created here (see ARCHITECTURE.md).

Keeping all TransformerLens model construction behind this package means a later move to
TransformerBridge touches one place.
"""

from analysis.models.device import pick_device, pick_dtype
from analysis.models.export import (
    ExportPlan,
    export_plan,
    prepare_for_training,
    save_hf_checkpoint,
    tl_to_hf_state_dict,
)
from analysis.models.handle import MODEL_ROLES, ModelHandle, ModelRole, check_same_tokenizer
from analysis.models.loader import detect_format, load_model

__all__ = [
    "MODEL_ROLES", "ExportPlan", "ModelHandle", "ModelRole", "check_same_tokenizer", "detect_format", "export_plan",
    "load_model", "pick_device", "pick_dtype", "prepare_for_training", "save_hf_checkpoint", "tl_to_hf_state_dict",
]
