"""Options of the logit lens: whose final norm and unembedding read each layer's residual stream, and the labels /
help texts that both the CLI and the app read. No torch here (the CLI reads this module to build its parser)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from analysis.checks import check_int
from analysis.errors import AnalysisInputError

STORE_KIND = "logit_lens"  # per-sample rows: the answer's probability and rank at every layer
OPTIONS_VERSION = 1

# "original": every model's residual stream is read through the ORIGINAL model's ln_final + unembed, so a changed
# readout (a suppression that edits only the last layers or the unembedding) cannot hide what the residual stream
# still carries. "own": each model through its own readout (nostalgebraist's logit lens as usually run).
Readout = Literal["original", "own"]
READOUTS: tuple[Readout, ...] = get_args(Readout)
READOUT_LABELS: dict[str, str] = {"original": "the original's final norm + unembedding",
                                  "own": "the model's own final norm + unembedding"}
READOUT_HELP = ("original: read every model's residual stream through the original's final norm and unembedding "
                "(a changed readout cannot hide the knowledge); own: through the model's own")

# What each layer reports (per sample): the first answer token's probability and rank, and the mean over the
# answer's tokens (teacher-forced) of each. Rank 1 = the top token.
QUANTITIES: tuple[str, ...] = ("first_prob", "first_rank", "mean_prob", "mean_rank")
QUANTITY_LABELS: dict[str, str] = {
    "first_prob": "first answer token: probability", "first_rank": "first answer token: rank",
    "mean_prob": "answer tokens: mean probability", "mean_rank": "answer tokens: mean rank",
}


@dataclass(frozen=True)
class LensOptions:
    """What changes the numbers of the logit lens (the store key), plus the rows per forward (chunking only)."""

    readout: Readout = "original"
    batch_size: int | None = field(default=None, compare=False)  # None: analysis.scoring.default_batch_size

    def validated(self) -> LensOptions:
        if self.readout not in READOUTS:
            raise AnalysisInputError(f"unknown readout {self.readout!r} (expected one of {', '.join(READOUTS)})")
        if self.batch_size is not None:
            check_int("batch size", self.batch_size, 1)
        return self

    def key(self) -> dict[str, Any]:
        return {"version": OPTIONS_VERSION, "readout": self.readout}
