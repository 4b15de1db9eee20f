"""The sample-format arguments of the verbs that read sample files (``erasure study create``; any verb taking
``--forget`` / ``--retain`` files can add them): ``--format``, ``--map``, ``--subject-field``,
``--subject-pattern``, ``--prompt-template``, ``--no-auto-subject``, and the lines that report how the files
were read. No torch here (the CLI builds its parser from this module)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from analysis.data.formats import FORMAT_HELP, FORMATS, MAPPABLE, ImportOptions, parse_column_map
from analysis.errors import SampleError

SHOWN_IDS = 5  # sample ids listed per split in the text report


def _column_map(text: str) -> tuple[tuple[str, str], ...]:
    try:
        return parse_column_map(text)
    except SampleError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _template(text: str) -> str:
    """``\\n`` and ``\\t`` typed on a shell command line are a newline and a tab."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def add_sample_format_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--format", choices=FORMATS, default=None,
                    help="the sample files' format (default: detected from each file's fields): "
                         + "; ".join(f"{k}: {v}" for k, v in FORMAT_HELP.items()))
    sp.add_argument("--map", type=_column_map, default=(), metavar="FIELD=COLUMN,...",
                    help="read these columns as our fields, e.g. prompt=question,answer=answer,subject=name (fields: "
                         f"{', '.join(MAPPABLE)}; a dotted COLUMN reads a nested field)")
    sp.add_argument("--subject-field", default=None, metavar="NAME",
                    help="for records without a subject: the field holding it (its text must occur in the question)")
    sp.add_argument("--subject-pattern", default=None, metavar="REGEX",
                    help="for records without a subject: a regular expression searched in the question (its first "
                         "group, or the whole match, is the subject)")
    sp.add_argument("--prompt-template", type=_template, default=None, metavar="TEMPLATE",
                    help="wrap every prompt (TOFU: the question) in this text, {} where it goes, e.g. "
                         "'Question: {}\\nAnswer:' (\\n is a newline)")
    sp.add_argument("--no-auto-subject", action="store_true",
                    help="do not look for a name-like span shared by question and answer in formats without a "
                         "subject (TOFU, CSV): such samples then have no subject unless --subject-field or "
                         "--subject-pattern finds one")


def sample_format(args: argparse.Namespace) -> ImportOptions | None:
    """The ImportOptions the arguments ask for (None: every default)."""
    opts = ImportOptions(format=args.format, column_map=tuple(args.map or ()), subject_field=args.subject_field,
                         subject_pattern=args.subject_pattern, prompt_template=args.prompt_template,
                         auto_subject=not args.no_auto_subject)
    return None if opts == ImportOptions() else opts.validated()


def import_report(imports: Mapping[str, Mapping[str, Any]]) -> str:
    """One line per split (``ImportedFile.summary()`` values): the format, the count, how subjects were found,
    and the samples without one (causal tracing skips them)."""
    lines = []
    for split, d in imports.items():
        how = ", ".join(f"{n} {k}" for k, n in sorted(d.get("subject_from", {}).items()))
        line = f"  {split}: {d.get('samples', 0)} samples ({d.get('format')}, {d.get('syntax')}) from {d.get('file')}"
        line += f"; subjects: {how or 'none'}"
        missing = d.get("no_subject") or {}
        if missing:
            ids = list(missing)
            more = f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
            first = ids[0]
            line += (f"; {len(ids)} without a subject (causal tracing skips them, the other analyses use them): "
                     f"{', '.join(ids[:SHOWN_IDS])}{more} (e.g. {first}: {missing[first]})")
        lines.append(line)
    return "\n".join(lines)
