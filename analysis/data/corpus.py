"""The synthetic fact corpus of the built-in model organism (seeded, deterministic).

Fictitious people with two-token names ("Velmar Quintos") have one value for each of four relations
whose values are shared across people. Each fact is seen a varying number of times (``exposures``,
1..8) in training, so memorisation strength varies across samples. Held-out paraphrase templates are
never trained on. A small general-ability set (cities -> countries, counting) measures utility.
Splits follow TOFU forget10: all facts of 10% of the people are ``forget``, the rest ``retain``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from analysis.data.schema import Sample

# Values shared across people. City and company names are invented; they have no real-world referent.
RELATION_VALUES: dict[str, tuple[str, ...]] = {
    "birthplace": ("Varnholt", "Kessaly", "Dunmere", "Orvik", "Talbrin", "Mossgate", "Quenlow", "Hadria",
                   "Brisk", "Lunaport", "Corveth", "Ashby"),
    "profession": ("baker", "pilot", "doctor", "sculptor", "farmer", "lawyer", "chemist", "sailor", "teacher",
                   "painter"),
    "pet": ("cat", "dog", "parrot", "tortoise", "rabbit", "hamster", "ferret", "goldfish"),
    "employer": ("Zentrix", "Halcyon", "Brightwell", "Nordane", "Quillcorp", "Vantor", "Obelisk", "Marlow",
                 "Pyrelight", "Sundry"),
}

# Training templates: {s} is the subject. The first template is the sample's canonical prompt.
TRAIN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "birthplace": ("{s} was born in", "The birthplace of {s} is", "{s} grew up in the city of"),
    "profession": ("{s} works as a", "The profession of {s} is", "By trade , {s} is a"),
    "pet": ("{s} has a pet", "The pet of {s} is a", "At home , {s} keeps a pet"),
    "employer": ("{s} is employed by", "The employer of {s} is", "Every day , {s} goes to work at"),
}

# Held-out paraphrases: never in training; they measure whether forgetting generalises.
PARAPHRASE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "birthplace": ("The city where {s} was born is", "{s} was born in the city of"),
    "profession": ("The job of {s} is", "{s} works as a trained"),
    "pet": ("The animal that {s} keeps is a", "{s} has a pet called a"),
    "employer": ("The company that employs {s} is", "{s} works for"),
}

COUNTRIES: tuple[str, ...] = ("Eldoria", "Marrowland", "Sestria", "Kaldun")
NUMBERS: tuple[str, ...] = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                            "eleven", "twelve")

_ONSETS = ("b", "br", "c", "d", "dr", "f", "g", "h", "k", "l", "m", "n", "p", "qu", "r", "s", "t", "v", "w",
           "z", "th", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "io")
_CODAS = ("", "n", "r", "l", "s", "th", "m", "x", "nd", "rt")


def _name(rng: random.Random, syllables: int) -> str:
    word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)
    return word.capitalize()


@dataclass(frozen=True)
class Person:
    first: str
    last: str
    facts: dict[str, str]

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


@dataclass
class Corpus:
    """Everything the organism is trained and evaluated on."""

    seed: int
    people: list[Person]
    samples: list[Sample]  # forget + retain facts and utility items
    forget_people: list[str]
    words: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    def training_pairs(self, exclude_ids: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, str]]:
        """(prompt, answer) training pairs: each fact ``exposures`` times, cycling through its training
        templates (the canonical prompt always first). ``exclude_ids`` drops facts (the retrain control)."""
        pairs: list[tuple[str, str]] = []
        for s in self.samples:
            if s.id in exclude_ids:
                continue
            templates = s.metadata["train_prompts"]
            for j in range(int(s.metadata["exposures"])):
                pairs.append((templates[j % len(templates)], s.answer))
        return pairs


def build_corpus(seed: int = 0, n_people: int = 200, forget_fraction: float = 0.1,
                 max_exposures: int = 8) -> Corpus:
    """Build the corpus deterministically from ``seed``."""
    if n_people < 10:
        raise ValueError("n_people must be at least 10 (forget10 needs at least one forget person)")
    rng = random.Random(seed)
    firsts: set[str] = set()
    lasts: set[str] = set()
    n_pool = max(12, int(n_people**0.5 * 2))
    reserved = {w.lower() for vals in RELATION_VALUES.values() for w in vals} | {c.lower() for c in COUNTRIES}
    while len(firsts) < n_pool:
        w = _name(rng, 2)
        if w.lower() not in reserved:
            firsts.add(w)
    while len(lasts) < n_pool:
        w = _name(rng, 2 + rng.randint(0, 1))
        if w.lower() not in reserved and w not in firsts:
            lasts.add(w)
    first_list, last_list = sorted(firsts), sorted(lasts)
    names: list[tuple[str, str]] = []
    used: set[tuple[str, str]] = set()
    while len(names) < n_people:
        pair = (rng.choice(first_list), rng.choice(last_list))
        if pair not in used:
            used.add(pair)
            names.append(pair)
    people = [Person(f, last, {r: rng.choice(v) for r, v in RELATION_VALUES.items()}) for f, last in names]
    n_forget = max(1, round(n_people * forget_fraction))
    forget_idx = set(rng.sample(range(n_people), n_forget))

    samples: list[Sample] = []
    for i, p in enumerate(people):
        split = "forget" if i in forget_idx else "retain"
        for rel, value in p.facts.items():
            exposures = rng.randint(1, max_exposures)
            samples.append(Sample(
                id=f"p{i:04d}-{rel}",
                prompt=TRAIN_TEMPLATES[rel][0].format(s=p.name),
                answer=value,
                subject=p.name,
                relation=rel,
                split=split,
                paraphrases=tuple(t.format(s=p.name) for t in PARAPHRASE_TEMPLATES[rel]),
                metadata={"exposures": exposures, "person": p.name,
                          "train_prompts": [t.format(s=p.name) for t in TRAIN_TEMPLATES[rel]]},
            ))
    samples.extend(_utility_samples(rng))
    words = _vocabulary(people, samples)
    return Corpus(seed=seed, people=people, samples=samples,
                  forget_people=[people[i].name for i in sorted(forget_idx)], words=words)


def _utility_samples(rng: random.Random) -> list[Sample]:
    """General ability: which country a city is in, and counting. Always trained, never unlearned."""
    out: list[Sample] = []
    for city in RELATION_VALUES["birthplace"]:
        country = rng.choice(COUNTRIES)
        out.append(Sample(id=f"u-city-{city}", prompt=f"{city} is a city in", answer=country, subject=city,
                          relation="country", split="utility",
                          metadata={"exposures": 4, "train_prompts": [f"{city} is a city in",
                                                                      f"The country of {city} is"]}))
    for i in range(len(NUMBERS) - 3):
        prompt = "Counting : " + " ".join(NUMBERS[i:i + 3])
        out.append(Sample(id=f"u-count-{i}", prompt=prompt, answer=NUMBERS[i + 3], relation="counting",
                          split="utility", metadata={"exposures": 4, "train_prompts": [prompt]}))
    return out


def _vocabulary(people: list[Person], samples: list[Sample]) -> list[str]:
    words: set[str] = set()
    for s in samples:
        for text in (s.prompt, s.answer, *s.paraphrases, *s.metadata.get("train_prompts", [])):
            words.update(text.split())
    for p in people:
        words.update((p.first, p.last))
    words.update(COUNTRIES)
    words.update(NUMBERS)
    for templates in (*TRAIN_TEMPLATES.values(), *PARAPHRASE_TEMPLATES.values()):
        for t in templates:
            words.update(w for w in t.split() if w != "{s}")
    return sorted(words)
