"""Erasure Workbench analysis package: the science behind the app, the CLI and the notebooks.

Never imports streamlit, the app or the CLI. The map: docs/ARCHITECTURE.md.
"""

import os as _os

# The workbench only ever loads local directories: never let transformers/huggingface_hub reach for
# the network (offline, a lookup stalls for ~30 s of retries). Set before any HF import; users may override.
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
