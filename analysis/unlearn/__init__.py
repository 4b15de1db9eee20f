"""`erasure unlearn`: unlearn a user's Hugging Face checkpoint with any method of the registry (or the zoo's
depth-limited suppression, or the retrain-from-a-base control), resumably, into a standard Hugging Face
checkpoint that ``transformers`` loads, with the per-sample trajectory; `erasure study add` registers it.

Rooms: ``options`` (UnlearnRunOptions, the methods, presets and help texts: no torch), ``methods`` (the method
instance per name; RetainFinetune, the retrain control on a checkpoint), ``checkpoint`` (the loop's saved state:
resuming), ``runner`` (unlearn_checkpoint, save / verify the Hugging Face checkpoint, add_to_study), ``result``
(UnlearnRun), ``cli``. The presets themselves live beside the methods (``analysis.unlearning.base``:
``PRETRAINED_PRESET``, ``pretrained_config``).

This is a package of its own, not part of ``analysis.unlearning``: that package registers every method (and so
imports torch) on import, and the CLI must build its parser without torch. Public names load their module on
first use (analysis.lazy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.lazy import lazy_exports

_M = "analysis.unlearn."
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["METHODS", "METHOD_HELP", "RUN_FILE", "CheckpointMethod", "UnlearnRunOptions"], _M + "options"),
    **dict.fromkeys(["RetainFinetune", "method_for"], _M + "methods"),
    **dict.fromkeys(["Checkpointer"], _M + "checkpoint"),
    **dict.fromkeys(["add_to_study", "read_samples", "save_checkpoint", "unlearn_checkpoint", "verify_export"],
                    _M + "runner"),
    **dict.fromkeys(["UnlearnRun"], _M + "result"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from analysis.unlearn.checkpoint import Checkpointer
    from analysis.unlearn.methods import RetainFinetune, method_for
    from analysis.unlearn.options import METHOD_HELP, METHODS, RUN_FILE, CheckpointMethod, UnlearnRunOptions
    from analysis.unlearn.result import UnlearnRun
    from analysis.unlearn.runner import (
        add_to_study,
        read_samples,
        save_checkpoint,
        unlearn_checkpoint,
        verify_export,
    )

__all__ = ["METHODS", "METHOD_HELP", "RUN_FILE", "CheckpointMethod", "Checkpointer", "RetainFinetune",
           "UnlearnRun", "UnlearnRunOptions", "add_to_study", "method_for", "read_samples", "save_checkpoint",
           "unlearn_checkpoint", "verify_export"]
