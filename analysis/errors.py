"""Exceptions with messages meant for users (CLI prints them on one line, the app via st.error)."""


class WorkbenchError(Exception):
    """Base class: any error whose message is already fit to show a user."""


class SampleError(WorkbenchError):
    """Invalid sample data (schema, validation, file problems)."""


class ModelLoadError(WorkbenchError):
    """A model directory could not be loaded."""


class StudyError(WorkbenchError):
    """A study is missing, malformed or inconsistent."""


class AnalysisInputError(WorkbenchError):
    """Bad options or inputs to an analysis (unknown sample id, out-of-range layer, ...)."""


class ModelExportError(WorkbenchError):
    """A hooked model could not be written back as the checkpoint's own Hugging Face weights."""
