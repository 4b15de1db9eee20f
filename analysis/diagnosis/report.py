"""The diagnosis as a self-contained HTML report (every Plotly figure embedded, the plotly.js bundle inline
once, the data as JSON inside the file: it opens offline) and as a JSON file."""

from __future__ import annotations

import html
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from analysis.cli_common import dumps
from analysis.diagnosis.figures import Chart, diagnosis_charts
from analysis.diagnosis.result import SAMPLE_COLUMNS, Diagnosis
from analysis.diagnosis.rules import capital
from analysis.errors import WorkbenchError
from analysis.palette import BLUE, GREY, ORANGE, READING_ICONS

# the palette's meanings: erased blue, suppressed orange, no reading grey; the verdict is always written beside
VERDICT_COLORS = {"erased": BLUE, "suppressed": ORANGE, "not unlearned": GREY, "inconclusive": GREY}

# Colours carry the palette's meanings as tints behind the words (text stays dark: readable, and the word is the
# label); $BLUE / $ORANGE are filled from analysis.palette.
_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } .meta { color: #666; font-size: 0.9rem; }
.verdict { border-left: 8px solid var(--c); background: #f7f7f7; padding: 0.8rem 1.2rem; margin: 1rem 0; }
.verdict h2 { margin: 0 0 0.4rem 0; color: #222; text-transform: uppercase; letter-spacing: 0.04em; }
table { border-collapse: collapse; font-size: 0.85rem; width: 100%; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.45rem; text-align: left; vertical-align: top; }
th { background: #f0f0f0; cursor: pointer; position: sticky; top: 0; }
.reading-gone { background: $BLUE33; font-weight: 600; } .reading-present { background: $ORANGE44; font-weight: 600; }
.reading-inconclusive { background: #e5e5e5; font-weight: 600; } .reading-unavailable, .reading-context { color: #777; }
.agree li { color: #222; } .disagree li { color: #222; font-weight: 600; } .caption { color: #555; font-size: 0.9rem; }
.caveat { color: #222; font-weight: 600; } .scroll { max-height: 40rem; overflow: auto; }
""".replace("$BLUE", BLUE).replace("$ORANGE", ORANGE)

# Click a column header to sort the per-sample table (numbers numerically, the rest as text).
_SORT_JS = """
document.querySelectorAll("table.sortable th").forEach((th, col) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0], rows = Array.from(body.rows);
  const asc = th.dataset.asc !== "1"; th.dataset.asc = asc ? "1" : "0";
  const val = r => { const t = r.cells[col].innerText.trim(), n = parseFloat(t); return isNaN(n) ? t : n; };
  rows.sort((a, b) => { const x = val(a), y = val(b);
    const order = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1);
    return asc ? order : -order; });
  rows.forEach(r => body.appendChild(r));
}));
"""


class ReportError(WorkbenchError):
    """The report cannot be written (output directory missing or not writable, path is a directory...)."""


def check_output(path: str | os.PathLike[str], what: str = "report") -> Path:
    """The resolved output path, or a ReportError saying why it cannot be written (checked before any work)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ReportError(f"the {what} path {p} is a directory; give a file name")
    parent = p.parent.resolve()
    if not parent.is_dir():
        raise ReportError(f"the {what}'s directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ReportError(f"the {what}'s directory {parent} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise ReportError(f"the {what} file {p} exists and is not writable")
    return p


def write_atomic(path: Path, text: str) -> None:
    """Write beside ``path`` then rename (a reader never sees half a report; permissions follow the umask)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ReportError(f"could not write {path}: {e.strerror or e}") from None


def _e(x: object) -> str:
    return html.escape(str(x))


def _icon(verdict: str) -> str:
    """The verdict's icon (shape and colour, analysis.palette.READING_ICONS) before its word, or nothing."""
    icon = READING_ICONS.get(verdict)
    return f'<span aria-hidden="true">{icon} </span>' if icon else ""


def _cell(x: object) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return ""
    if isinstance(x, float):
        return f"{x:.4g}"
    return _e(x)


def samples_table(d: Diagnosis) -> str:
    head = "".join(f'<th title="{_e(desc)}">{_e(col)}</th>' for col, desc in SAMPLE_COLUMNS.items())
    rows = "".join("<tr>" + "".join(f"<td>{_cell(s.get(c))}</td>" for c in SAMPLE_COLUMNS) + "</tr>"
                   for s in d.samples)
    return (f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody>'
            "</table></div>")


def _list(items: list[str], cls: str = "") -> str:
    if not items:
        return "<p>none</p>"
    return f'<ul class="{cls}">' + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>"


def figure_html(chart: Chart, first: bool) -> str:
    """One figure; the plotly.js bundle goes inline with the first one only."""
    fig = chart.figure.to_html(full_html=False, include_plotlyjs=first,
                               div_id=f"fig-{chart.key}", config={"displaylogo": False})
    return (f'<section id="{_e(chart.key)}"><h3>{_e(chart.title)}</h3><p class="caption">{_e(chart.caption)}</p>'
            f"{fig}</section>")


def fitted_verdict(study: Any, model: str) -> Any | None:
    """(ModelVerdict, ruler) of the shipped rule on ``model`` (analysis.verdict), None when no rule is shipped."""
    from analysis.errors import AnalysisInputError
    from analysis.verdict.judge import judge, ruler, signal_rulers
    from analysis.verdict.rule import load_rule

    try:
        rule = load_rule()
    except AnalysisInputError:
        return None
    return judge(study, model, rule), ruler(study, rule.signal), signal_rulers(study, model)


def fitted_html(fitted: Any | None) -> tuple[str, list[Chart]]:
    """The fitted verdict's box, its ruler chart and one ruler per other signal (``fitted`` = (ModelVerdict,
    {member: (status, score)}[, signal_rulers]) from analysis.verdict.judge), or nothing."""
    if fitted is None:
        return "", []
    from analysis.verdict.figures import ruler_figure, signal_ruler_figure

    v, zoo, *rest = fitted
    others = [r for r in (rest[0] if rest else []) if r[0] != v.signal]
    color = VERDICT_COLORS.get(v.verdict, "#444")
    n_sup = sum(c == "suppressed" for c in v.per_sample.values())
    box = (f'<div class="verdict" style="--c: {color}"><h2>{_icon(v.verdict)}Fitted verdict: {_e(v.verdict)}</h2>'
           f"<p><b>{_e(capital(v.reason))}.</b></p><p>Driven by {_e(', '.join(v.drivers))}; {n_sup} of "
           f"{len(v.per_sample)} forget samples read suppressed on their own evidence. The rule "
           "(analysis/verdict/rule.json) was fitted on development zoos and tested on held-out seeds "
           "(benchmarks/VERDICT.md).</p></div>")
    charts = [] if not zoo else [Chart("ruler", "The ruler: this model among the zoo",
                                       "The rule's signal on every zoo member (P: knowledge present but hidden; N: "
                                       "knowledge absent) and on this model with its 95% interval; the dashed line "
                                       "is the rule's boundary.", ruler_figure(zoo, v))]
    charts += [Chart(f"ruler-{sig}", f"{sig}: this model among the zoo",
                     "Not part of the verdict: where the model sits on another signal scored by the meta-evaluation.",
                     signal_ruler_figure(zoo_s, v.model, score, ci, sig)) for sig, zoo_s, score, ci in others]
    return box, charts


def report_html(d: Diagnosis, fitted: Any | None = None) -> str:
    """The whole report as one HTML document (no external resources); ``fitted``: see :func:`fitted_html`."""
    fitted_box, fitted_charts = fitted_html(fitted)
    charts = fitted_charts + diagnosis_charts(d)
    color = VERDICT_COLORS.get(d.verdict, "#444")
    signals = "".join(
        f'<tr><td>{_e(capital(s.title))}</td><td class="reading-{_e(s.reading)}">{_e(s.reading)}</td>'
        f"<td>{_e(s.summary)}{_list(s.evidence) if len(s.evidence) > 1 else ''}</td></tr>" for s in d.signals.values())
    a = d.agreement
    figures = "".join(figure_html(c, i == 0) for i, c in enumerate(charts))
    data = dumps(d.to_dict()).replace("</", "<\\/")  # strict JSON: NaN / Infinity are null with a note
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    fps = ", ".join(f"{n} {f}" for n, f in d.fingerprints.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Diagnosis of {_e(d.model)} ({_e(d.study)})</title>
<style>{_STYLE}</style></head><body>
<h1>Diagnosis of {_e(d.model)}</h1>
<p class="meta">Study {_e(d.study)} · retrain control {_e(d.retrain or "none")} · fingerprints {_e(fps)} ·
written {written} by Erasure Workbench</p>
{fitted_box}
<div class="verdict" style="--c: {color}"><h2>{_icon(d.verdict)}{_e(d.verdict)}{" (signal by signal, hand-set thresholds)" if fitted_box else ""}</h2><p><b>{_e(d.headline)}</b></p>
{"".join(f'<p class="caveat">Caveat: {_e(c)}</p>' for c in d.caveats)}{_list(d.evidence)}</div>
<h2>Signals</h2>
<p class="caption">gone: the signal finds no sign of the forget knowledge; present: it does; context: CUD predicts
difficulty before unlearning rather than reading this model.</p>
<table><thead><tr><th>signal</th><th>reading</th><th>what it found</th></tr></thead><tbody>{signals}</tbody></table>
<h2>Agreement</h2>
<h3>Signals that agree</h3>{_list(a.get("agree", []), "agree")}
<h3>Signals that disagree</h3>{_list(a.get("disagree", []), "disagree")}
<h3>No clear reading</h3>{_list(a.get("silent", []))}
<h3>Context</h3>{_list(a.get("context", []))}
<h2>Figures</h2>{figures}
<h2>Per-sample table</h2>
<p class="caption">One row per forget sample; hover a header for its meaning, click it to sort.</p>
{samples_table(d)}
<script type="application/json" id="diagnosis-data">{data}</script>
<script>{_SORT_JS}</script>
</body></html>
"""


def output_paths(html_path: str | os.PathLike[str] | None,
                 json_path: str | os.PathLike[str] | None) -> tuple[Path | None, Path | None]:
    """Both output paths checked (before any work): writable, and not the same file."""
    html_p = check_output(html_path, "report") if html_path else None
    json_p = check_output(json_path, "JSON") if json_path else None
    if html_p and json_p and html_p.resolve() == json_p.resolve():
        raise ReportError("the report and the JSON data must go to different files")
    return html_p, json_p


def write_report(d: Diagnosis, html_path: str | os.PathLike[str] | None = None,
                 json_path: str | os.PathLike[str] | None = None, fitted: Any | None = None) -> dict[str, int]:
    """Write the HTML report and / or the JSON data; returns the bytes written per path."""
    html_p, json_p = output_paths(html_path, json_path)
    texts = {}
    if html_p:
        texts[html_p] = report_html(d, fitted)
    if json_p:
        data = d.to_dict() | ({"fitted_verdict": fitted[0].to_dict()} if fitted is not None else {})
        texts[json_p] = dumps(data, indent=1)  # NaN / Infinity -> null with a note, never bare
    for path, text in texts.items():
        write_atomic(path, text)
    return {str(p): len(t.encode("utf-8")) for p, t in texts.items()}
