"""The one colour language of the app and the notebooks (colour-blind safe: Okabe-Ito / Paul Tol hues).

One meaning per colour everywhere:
- ORANGE = the forget knowledge is there (present, suppressed, "P" zoo members, the unlearned model's shortfall);
- BLUE = the knowledge is gone (erased, absent, "N" zoo members, the retrain control);
- GREY = no reading (inconclusive, unavailable, unknown);
- BLACK = the model being judged; TEAL / PURPLE = neutral series (the original, utility, secondary metrics).
Every figure that uses a colour for a meaning also writes the meaning as text (legend, label or marker text), so
nothing depends on telling two hues apart. Diverging heatmaps use blue (negative) / white / orange (positive);
sequential ones use a single-hue scale starting at white.
"""

from __future__ import annotations

ORANGE = "#E69F00"  # present / suppressed
VERMILLION = "#D55E00"  # a stronger orange: the unlearned model in role colours, "reversed" in separations
BLUE = "#0072B2"  # gone / erased
SKY = "#56B4E9"  # a lighter blue: secondary "gone" series
GREY = "#999999"  # no reading
BLACK = "#222222"  # the judged model
TEAL = "#009E73"  # neutral series: the original model
PURPLE = "#CC79A7"  # neutral series: secondary metrics

# what a reading / verdict / zoo status means, as a colour (the text label is always shown beside it)
READING_COLORS: dict[str, str] = {
    "present": ORANGE, "suppressed": ORANGE, "P": ORANGE,
    "gone": BLUE, "erased": BLUE, "absent": BLUE, "N": BLUE,
    "inconclusive": GREY, "unavailable": GREY, "unknown": GREY, "not unlearned": GREY, "context": GREY,
}
# model roles: the original is neutral, the controls read as "gone" (blue), unlearned models are the ones judged
ROLE_COLORS: dict[str, str] = {"original": TEAL, "control": BLUE, "unlearned": VERMILLION, "zoo": GREY}
# diverging (negative = blue, positive = orange) and sequential scales
DIVERGING_SCALE: list[list[float | str]] = [[0.0, BLUE], [0.5, "#FFFFFF"], [1.0, ORANGE]]
SEQUENTIAL_SCALE: list[list[float | str]] = [[0.0, "#FFFFFF"], [1.0, BLUE]]
# icons beside verdict text in the app (shape + colour: ● erased/gone, ▲ suppressed/present, ◆ inconclusive)
READING_ICONS: dict[str, str] = {"gone": "🔵", "erased": "🔵", "present": "🟠", "suppressed": "🟠",
                                 "inconclusive": "⚪", "unavailable": "⚪", "not unlearned": "⚪", "context": "ℹ️"}


def reading_color(reading: str) -> str:
    """The colour of a reading, verdict or zoo status (grey for anything unknown)."""
    return READING_COLORS.get(reading, GREY)


__all__ = ["BLACK", "BLUE", "DIVERGING_SCALE", "GREY", "ORANGE", "PURPLE", "READING_COLORS", "READING_ICONS",
           "ROLE_COLORS", "SEQUENTIAL_SCALE", "SKY", "TEAL", "VERMILLION", "reading_color"]
