"""Finding a subject span in a question when a data format has none (TOFU, open-unlearning, a CSV).

No NER model: a subject is a *capitalised span*, a run of words that start with a capital letter, joined by
spaces (an initial's full stop included: ``J. R. Okafor``) and by a few lower-case name particles between two
capitalised words (``University of Lagos``, ``Leonardo da Vinci``). Function words that open a sentence
(``What``, ``The``, ``In`` ...) are trimmed from both ends of a run, and a possessive ``'s`` ends it.

``find_subject(question, answer)`` returns, in this order of preference,

1. ``shared``: the longest capitalised span of at least two words that occurs in the question and, as whole
   words, in the answer (TOFU: "Where was Hsiao Yun-Hwa born?" / "Hsiao Yun-Hwa was born in Taipei.");
2. ``question``: else the longest capitalised span of the question (one word is enough);

or no span and the reason. The span is always a substring of ``question`` as written, so it stays a span of
any prompt built around the question. Longest means most words, then most characters; ties go to the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A word: letters / digits, with inner apostrophes, hyphens and full stops (O'Brien, Al-Kuwaiti, U.S).
_WORD = re.compile(r"[^\W_]+(?:['’\-.][^\W_]+)*")
_POSSESSIVE = re.compile(r"['’]s$")
# Lower-case particles allowed between two capitalised words of one name.
PARTICLES = frozenset({"of", "de", "da", "del", "della", "der", "di", "du", "la", "le", "van", "von", "bin", "ibn",
                       "al", "el", "y", "the", "and"})
# Capitalised function words that start sentences and questions, never a subject's edge.
STOPWORDS = frozenset({
    "A", "An", "The", "What", "Who", "Whom", "Whose", "Where", "When", "Which", "Why", "How", "Is", "Are", "Was",
    "Were", "Do", "Does", "Did", "Can", "Could", "Would", "Should", "Will", "Has", "Have", "Had", "May", "Might",
    "In", "On", "At", "Of", "For", "To", "From", "With", "By", "As", "And", "But", "Or", "If", "It", "Its", "This",
    "That", "These", "Those", "He", "She", "They", "His", "Her", "Their", "Them", "I", "My", "We", "Our", "You",
    "Your", "Yes", "No", "Not", "Please", "Name", "Describe", "Tell", "Give", "List", "Explain", "Identify",
    "Mention", "Provide", "State", "Also", "Besides", "Apart", "Aside", "Although", "Despite", "Throughout",
    "During", "Being", "Some", "Any", "Many", "Most", "One", "Other", "Another", "Such", "There", "Here", "Following",
})


@dataclass(frozen=True)
class _Word:
    start: int
    end: int  # the end of the word without a possessive 's
    text: str
    possessive: bool

    @property
    def capitalised(self) -> bool:
        return self.text[:1].isupper()


@dataclass(frozen=True)
class Found:
    """A subject span found in a question (``how``: "shared" or "question"), or none and ``reason``."""

    span: str
    how: str
    reason: str = ""


def _words(text: str) -> list[_Word]:
    out = []
    for m in _WORD.finditer(text):
        word = m.group(0)
        poss = _POSSESSIVE.search(word)
        end = m.end() - (len(poss.group(0)) if poss else 0)
        out.append(_Word(m.start(), end, text[m.start(): end], bool(poss)))
    return out


def _joined(text: str, a: _Word, b: _Word) -> bool:
    """``a`` and ``b`` are adjacent words of one name: only spaces between them, or an initial's full stop."""
    gap = text[a.end: b.start]
    if a.possessive:
        return False
    return (gap.strip() == "" and "\n" not in gap and len(gap) <= 2) or \
        (len(a.text) == 1 and a.capitalised and re.fullmatch(r"\. ?", gap) is not None)


def _runs(text: str) -> list[list[_Word]]:
    """Maximal runs of capitalised words (with particles between two of them), trimmed of stopwords."""
    words = _words(text)
    runs: list[list[_Word]] = []
    i = 0
    while i < len(words):
        if not words[i].capitalised:
            i += 1
            continue
        run = [words[i]]
        j = i + 1
        while j < len(words) and _joined(text, run[-1], words[j]):
            w = words[j]
            if w.capitalised:
                run.append(w)
            elif w.text.lower() in PARTICLES and j + 1 < len(words) and words[j + 1].capitalised \
                    and _joined(text, w, words[j + 1]):
                run.extend([w, words[j + 1]])
                j += 1
            else:
                break
            j += 1
            if run[-1].possessive:
                break
        runs.append(_trim(run))
        i = j
    return [r for r in runs if r]


def _trim(run: list[_Word]) -> list[_Word]:
    def edge(w: _Word) -> bool:
        return w.text in STOPWORDS or not w.capitalised

    lo, hi = 0, len(run)
    while lo < hi and edge(run[lo]):
        lo += 1
    while hi > lo and edge(run[hi - 1]):
        hi -= 1
    return run[lo:hi]


def _span(text: str, words: list[_Word]) -> str:
    return text[words[0].start: words[-1].end]


def _in_words(span: str, text: str) -> bool:
    return re.search(r"(?<![^\W_])" + re.escape(span) + r"(?![^\W_])", text) is not None


def capitalised_spans(text: str) -> list[str]:
    """Every capitalised span of ``text`` (maximal runs, trimmed), in order."""
    return [_span(text, r) for r in _runs(text)]


def find_subject(question: str, answer: str) -> Found:
    """The subject span of ``question`` (see the module docstring): shared with ``answer`` if a multi-word span
    is, else the question's longest capitalised span, else none with the reason."""
    runs = _runs(question)
    if not runs:
        return Found("", "", "no capitalised word (name-like span) in the question")
    best: tuple[int, int, int] | None = None
    best_span = ""
    order = 0
    for run in runs:
        for i in range(len(run)):
            for j in range(i + 2, len(run) + 1):  # at least two words
                sub = _trim(run[i:j])
                if len(sub) < 2 or sub[0] is not run[i] or sub[-1] is not run[j - 1]:
                    continue
                span = _span(question, sub)
                order += 1
                key = (len(sub), len(span), -order)
                if (best is None or key > best) and _in_words(span, answer):
                    best, best_span = key, span
    if best is not None:
        return Found(best_span, "shared")
    longest = max(enumerate(runs), key=lambda kv: (len(kv[1]), len(_span(question, kv[1])), -kv[0]))[1]
    return Found(_span(question, longest), "question")
