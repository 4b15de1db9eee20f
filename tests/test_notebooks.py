"""The walkthrough notebooks run top to bottom (nbclient, the ``python3`` kernel of this interpreter, cwd the
repository root) and leave their results where they say: the quickstart on a copy of the small study (via
``$ERASURE_STUDY``), the bring-your-own-checkpoints notebook in a temporary directory (via
``$ERASURE_NB_WORKDIR``). A cell error fails the test (nbclient raises CellExecutionError)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "notebooks" / "01_quickstart.ipynb"
BYO = ROOT / "notebooks" / "02_bring_your_own_checkpoints.ipynb"
PLOTLY = "application/vnd.plotly.v1+json"
VERDICTS = ("erased", "suppressed", "inconclusive")

pytestmark = pytest.mark.slow


def _execute(path: Path) -> tuple[NotebookNode, float]:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, startup_timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    t0 = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - t0


def _code_cells(nb: NotebookNode) -> list[NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def _text(cell: NotebookNode) -> str:
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream" and out.name == "stdout":
            parts.append(out.text)
        elif out.output_type in ("display_data", "execute_result") and PLOTLY not in out.data:
            parts.append(out.data.get("text/plain", ""))
    return "\n".join(parts)


def _figures(nb: NotebookNode) -> int:
    return sum(PLOTLY in out.get("data", {}) for c in _code_cells(nb) for out in c.outputs)


def _tagged(nb: NotebookNode, tag: str) -> NotebookNode:
    cells = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def _store_kinds(study_root: Path) -> dict[str, int]:
    from analysis.study import Study

    return dict(Study.open(study_root).store.kinds())


@pytest.mark.parametrize("path", [QUICKSTART, BYO], ids=lambda p: p.stem)
def test_notebooks_are_committed_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in _code_cells(nb):
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]


def test_quickstart_runs_on_the_small_study(small_study, tmp_path, monkeypatch):
    root = tmp_path / "study"
    # A copy without the store and SAEs: the notebook computes (and stores) everything itself, and leaves the
    # shared session study as the other tests expect it.
    shutil.copytree(small_study.root, root, ignore=shutil.ignore_patterns("results.sqlite*", "sae"))
    monkeypatch.setenv("ERASURE_STUDY", str(root))
    nb, seconds = _execute(QUICKSTART)
    print(f"{QUICKSTART.name}: {seconds:.1f} s")

    setup = _text(_tagged(nb, "setup"))
    assert f"study {root}:" in setup  # it opened $ERASURE_STUDY, not studies/demo
    verdict = _text(_tagged(nb, "verdict"))
    ref = small_study.manifest.retrain
    for name in small_study.model_names:
        if name in ("original", ref):
            continue
        line = next((ln for ln in verdict.splitlines() if ln.startswith(f"{name}: ")), None)
        assert line is not None and line.split(": ", 1)[1] in VERDICTS, (name, verdict)
    # the retrain control is the deletion reference, never judged against itself (erased by construction)
    assert not any(ln.startswith(f"{ref}: ") for ln in verdict.splitlines()), verdict
    # scoreboard, trajectories, 3 trace heatmaps, AIE, 2 circuits, 3 CUD, 3 attribution, restoration, probes
    assert _figures(nb) >= 16
    kinds = _store_kinds(root)
    for kind in ("eval", "trace", "eap_ig", "attribution", "recovery", "sae_restoration"):
        assert kinds.get(kind, 0) > 0, (kind, kinds)
    assert any((root / "sae").glob("blocks.*/erasure_sae.json"))


def test_bring_your_own_checkpoints_runs_offline(tmp_path, monkeypatch):
    work = tmp_path / "byo"
    monkeypatch.setenv("ERASURE_NB_WORKDIR", str(work))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb, seconds = _execute(BYO)
    print(f"{BYO.name}: {seconds:.1f} s")

    manifest = json.loads((work / "study" / "study.json").read_text())
    assert set(manifest["models"]) == {"original", "unlearned", "retrain"}
    assert manifest["retrain"] == "retrain"
    for entry in manifest["models"].values():
        ckpt = Path(entry["path"])
        assert ckpt.is_relative_to(work)
        assert (ckpt / "config.json").is_file() and (ckpt / "model.safetensors").is_file()
        assert (ckpt / "tokenizer.json").is_file()
    board = _text(_tagged(nb, "scoreboard"))
    assert all(name in board for name in manifest["models"])
    kinds = _store_kinds(work / "study")
    for kind in ("eval", "trace", "eap_ig", "attribution"):
        assert kinds.get(kind, 0) > 0, (kind, kinds)
    # scoreboard, 3 trace heatmaps, AIE, attribution heatmap and change bars, 2 circuits
    assert _figures(nb) >= 9
    # CUD needs observed difficulty, which downloaded checkpoints do not carry: the notebook shows the error.
    assert any("StudyError: " in _text(c) and "unlearning.json" in _text(c) for c in _code_cells(nb))
