"""Label vocabularies of the corpora and their map onto arousal and valence.

Categories are the corpus's own emotion names, in English and lower case (EMO-DB ``W`` -> ``"anger"``), in the
order the corpus documentation lists its codes. For training across corpora (EmoNet, Gerczuk et al., IEEE Trans.
Affective Computing, §6.2 "Aggregated Corpus Training via Arousal Valence Mapping") every category is placed on two
arousal levels (low, high) and three valence levels (negative, neutral, positive) following **Table 2** of that
paper, which maps all categories of the EMOSet corpora with the circumplex model of affect (Russell 1980, the
paper's ref. [36]). :data:`CIRCUMPLEX` is that table, word for word.

Corpus words that are inflections of a table entry (``happy``, ``sad``, ``angry``, ``fearful``, ``surprised``) map
through :data:`SYNONYMS`. One corpus label is not in Table 2:

* RAVDESS ``calm`` -> **low arousal, positive valence**. On Russell's circumplex, calm (with relaxed, serene,
  content) lies in the pleasant/deactivated quadrant, where Table 2 itself puts "relief" and "tenderness"; and
  RAVDESS has a separate "neutral" class, so mapping calm to neutral valence would merge two classes the corpus keeps
  apart. Others map calm to neutral valence; this placement is our decision, not the paper's.

Binary valence (:func:`binary_valence`) merges negative and neutral valence into one class against positive, as the
NICU paper (Interspeech; §4.2 "Conducted experiments") does to match its target data. The paper calls the merged
class "neutral"; we name it ``"non-positive"`` so that it cannot be confused with ternary neutral valence.

:func:`balanced_subsample` implements the per-corpus random subsampling of §6.2: every mapped class of a corpus is
cut to the size of that corpus's minority class, so a model cannot learn the corpora's class priors.

**Numeric arousal/valence** (:data:`VALUE_SPACES`, ``"av_values"``): :func:`av_values` puts Table 2's levels on
numbers, arousal low/high -> -1/+1 and valence negative/neutral/positive -> -1/0/+1, so that a dimensional head
(arousal and valence in [-1, 1], :func:`sermodels.outputs.dimensions`) can be trained and scored with CCC on the
categorical corpora. This is a **coarse placement of categories, not rated dimensions**: every item of a category
gets the same corner (or edge midpoint) of the square, so there is no variation within a category, intensity is
ignored (RAVDESS "strong" anger is +1 like "normal" anger), and a CCC on these targets measures how well a model
separates the category groups along each axis, not agreement with human dimensional ratings. Neither EmoNet nor
any other source paper defines these numbers: they are ours, the simplest symmetric coding of the levels.

**Shared emotion sets** (:data:`SHARED_SETS`, label spaces ``"basic4"`` and ``"basic6"``): Marczewski, Veloso and
Ziviani ("Learning Transferable Features for Speech Emotion Recognition", ACM Thematic Workshops 2017, §4.1
"Datasets and Domains") train across corpora by normalising every corpus "to cover the same emotional states", the
six basic emotions anger, disgust, fear, happiness, sadness and surprise: ``"basic6"``. Our four corpora share only
anger, happiness, neutral and sadness, hence ``"basic4"`` (ours, not the paper's: it keeps neutral, which the paper's
six leave out). A set does not merge categories into coarser classes as arousal/valence do: it keeps the classes it
names and a corpus is *restricted* to them, so a category outside the set (EMO-DB boredom, RAVDESS calm, fear for
``"basic4"``) has no class there (:func:`map_label` raises :class:`OutsideLabelSet`, :func:`in_label_set` says
``False``) and a data module drops its items. Words reach a set's names through :func:`canonical` (the synonyms
above) and one set-specific synonym, :data:`SET_SYNONYMS`: ``joy`` -> ``happiness``. EMOVO's "gioia" is joy, and
Table 2 of EmoNet puts joy and happiness in the same cell (high arousal, positive valence); we take them as one
class, which is our decision, not a statement of either paper. The classes are in alphabetical order, which is the
order of the sorted folder names of a generic class-folder corpus, so a model trained on a set has the same logit
order as a folder corpus with those classes.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

T = TypeVar("T")

AROUSAL_CLASSES = ("low", "high")
VALENCE_CLASSES = ("negative", "neutral", "positive")
BINARY_VALENCE_CLASSES = ("non-positive", "positive")

# EmoNet Table 2, column by column: (arousal, valence) -> categories.
_TABLE_2: dict[tuple[str, str], tuple[str, ...]] = {
    ("low", "negative"): (
        "contempt",
        "disappointment",
        "disgust",
        "frustration",
        "guilt",
        "hurt",
        "impatience",
        "irritation",
        "jealousy",
        "sadness",
        "shame",
        "unfriendliness",
        "worry",
    ),
    ("low", "neutral"): ("boredom", "confusion", "neutral", "pondering", "rest", "sneakiness"),
    ("low", "positive"): ("admiration", "kindness", "pride", "relief", "tenderness"),
    ("high", "negative"): (
        "aggressiveness",
        "anger",
        "anxiety",
        "despair",
        "fear",
        "helplessness",
        "high-stress",
        "scream",
    ),
    ("high", "neutral"): ("emphatic", "interest", "intoxication", "medium-stress", "nervousness", "surprise"),
    ("high", "positive"): (
        "amusement",
        "cheerfulness",
        "elation",
        "excitement",
        "happiness",
        "joking",
        "joy",
        "pleasure",
        "positive",
    ),
}

#: category -> (arousal, valence), exactly EmoNet Table 2.
CIRCUMPLEX: dict[str, tuple[str, str]] = {
    category: place for place, categories in _TABLE_2.items() for category in categories
}

#: Corpus words that are another form of a Table 2 category.
SYNONYMS: dict[str, str] = {
    "happy": "happiness",
    "sad": "sadness",
    "angry": "anger",
    "fearful": "fear",
    "surprised": "surprise",
}

#: Categories absent from Table 2, placed by us (reasons in the module docstring).
EXTRA_PLACEMENTS: dict[str, tuple[str, str]] = {
    "calm": ("low", "positive"),
}

#: Each built-in corpus's categories, in the order of its documented codes (this is the logit order of a
#: "categories" head trained on it).
CORPUS_LABELS: dict[str, tuple[str, ...]] = {
    # W L E A F T N
    "emodb": ("anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"),
    # emotion field 01 .. 08
    "ravdess": ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"),
    # dis gio neu pau rab sor tri
    "emovo": ("disgust", "joy", "neutral", "fear", "anger", "surprise", "sadness"),
    # folders Angry Happy Neutral Sad
    "urdu": ("angry", "happy", "neutral", "sad"),
}

#: Emotion sets shared by corpora: name -> classes, in alphabetical order (= a class-folder corpus's sorted folders).
#: "basic6": the six emotions every corpus is normalised to in Marczewski et al. 2017, §4.1; "basic4": the four
#: classes shared by EMO-DB, RAVDESS, EMOVO and URDU (ours; module docstring).
SHARED_SETS: dict[str, tuple[str, ...]] = {
    "basic4": ("anger", "happiness", "neutral", "sadness"),
    "basic6": ("anger", "disgust", "fear", "happiness", "sadness", "surprise"),
}

#: Canonical words that are one class of a shared set beyond :data:`SYNONYMS` (EMOVO "gioia"; module docstring).
SET_SYNONYMS: dict[str, str] = {"joy": "happiness"}

#: Class names of each label space, in index order. "categories" has no shared order: it is per corpus
#: (:data:`CORPUS_LABELS`, or a generic corpus's sorted folder/CSV labels), hence ``None``.
LABEL_SPACES: dict[str, tuple[str, ...] | None] = {
    "categories": None,
    "arousal": AROUSAL_CLASSES,
    "valence": VALENCE_CLASSES,
    "binary_valence": BINARY_VALENCE_CLASSES,
    **SHARED_SETS,
}


#: Numbers of the Table 2 levels for the "av_values" space (module docstring): a coarse placement of categories.
LEVEL_VALUES: dict[str, dict[str, float]] = {
    "arousal": {"low": -1.0, "high": 1.0},
    "valence": {"negative": -1.0, "neutral": 0.0, "positive": 1.0},
}

#: Numeric label spaces: name -> dimension names, in output order (a dimensional head's names).
VALUE_SPACES: dict[str, tuple[str, ...]] = {"av_values": ("arousal", "valence")}


class UnknownLabelError(ValueError):
    """A category that has no arousal/valence placement. ``str(err)`` names it."""

    def __init__(self, label: str):
        self.label = label
        super().__init__(
            f"unknown emotion category {self.label!r}: it is not in EmoNet Table 2, not a known synonym "
            f"({', '.join(sorted(SYNONYMS))}) and has no documented placement ({', '.join(sorted(EXTRA_PLACEMENTS))})"
        )


class OutsideLabelSet(ValueError):
    """A known category that is not one of a shared set's classes (e.g. boredom in "basic4"). ``str(err)`` names
    the label and the set."""

    def __init__(self, label: str, space: str):
        self.label = label
        self.space = space
        super().__init__(
            f"emotion category {label!r} is outside the label set {space!r} ({', '.join(SHARED_SETS[space])})"
        )


def canonical(label: str) -> str:
    """The Table 2 spelling of ``label`` (lower case, synonyms resolved); unknown labels are an error."""
    word = label.strip().lower()
    word = SYNONYMS.get(word, word)
    if word not in CIRCUMPLEX and word not in EXTRA_PLACEMENTS:
        raise UnknownLabelError(label)
    return word


def placement(label: str) -> tuple[str, str]:
    """``(arousal, valence)`` of a category."""
    word = canonical(label)
    return CIRCUMPLEX.get(word) or EXTRA_PLACEMENTS[word]


def arousal(label: str) -> str:
    """``"low"`` or ``"high"``."""
    return placement(label)[0]


def valence(label: str) -> str:
    """``"negative"``, ``"neutral"`` or ``"positive"``."""
    return placement(label)[1]


def binary_valence(label: str) -> str:
    """``"positive"`` or ``"non-positive"`` (negative and neutral merged, NICU paper §4.2)."""
    return "positive" if valence(label) == "positive" else "non-positive"


def _set_word(label: str) -> str:
    """The word ``label`` is in every shared set: :func:`canonical`, then :data:`SET_SYNONYMS`."""
    word = canonical(label)
    return SET_SYNONYMS.get(word, word)


def set_class(label: str, space: str) -> str:
    """The class of shared set ``space`` that ``label`` is (``"joy"`` -> ``"happiness"``); a known category outside
    the set raises :class:`OutsideLabelSet`, an unknown word :class:`UnknownLabelError`."""
    word = _set_word(label)
    if word not in SHARED_SETS[space]:
        raise OutsideLabelSet(label, space)
    return word


_MAPPERS: dict[str, Callable[[str], str]] = {
    "arousal": arousal,
    "valence": valence,
    "binary_valence": binary_valence,
}


def map_label(label: str, space: str) -> str:
    """``label`` in label space ``space``; in "categories" the label itself (any corpus vocabulary is allowed).

    In a shared set (``"basic4"``, ``"basic6"``) a category outside the set raises :class:`OutsideLabelSet`;
    :func:`in_label_set` tells which labels have a class there.
    """
    if space not in LABEL_SPACES:
        raise ValueError(f"unknown label space {space!r}; choose one of {sorted(LABEL_SPACES)}")
    if space == "categories":
        return label
    if space in SHARED_SETS:
        return set_class(label, space)
    return _MAPPERS[space](label)


def in_label_set(label: str, space: str) -> bool:
    """Whether ``label`` has a class in ``space``. Always for "categories" and the arousal/valence spaces (they
    place every known category); for a shared set, whether the label is one of its classes. An unknown word raises
    :class:`UnknownLabelError` (except in "categories"), so that a typo is not silently taken for "outside"."""
    if space not in LABEL_SPACES:
        raise ValueError(f"unknown label space {space!r}; choose one of {sorted(LABEL_SPACES)}")
    if space == "categories":
        return True
    word = _set_word(label)
    return space not in SHARED_SETS or word in SHARED_SETS[space]


def scoring_map(space: str) -> Callable[[str], str | None]:
    """How a corpus's categories are scored against a head of class space ``space``: :func:`map_label`, except that
    a category outside a shared set maps to ``None`` (the item is left out of the scores, as the data module drops
    it from training)."""
    if space in SHARED_SETS:
        return lambda label: set_class(label, space) if in_label_set(label, space) else None
    return lambda label: map_label(label, space)


def av_values(label: str) -> dict[str, float]:
    """``{"arousal": -1 | 1, "valence": -1 | 0 | 1}`` of a category (a coarse placement, module docstring)."""
    level_arousal, level_valence = placement(label)
    return {"arousal": LEVEL_VALUES["arousal"][level_arousal], "valence": LEVEL_VALUES["valence"][level_valence]}


_VALUE_MAPPERS: dict[str, Callable[[str], dict[str, float]]] = {"av_values": av_values}


def value_mapper(space: str) -> Callable[[str], dict[str, float]]:
    """The function placing a category in the numeric space ``space`` (:data:`VALUE_SPACES`), e.g. :func:`av_values`."""
    if space not in VALUE_SPACES:
        raise ValueError(f"unknown numeric label space {space!r}; choose one of {sorted(VALUE_SPACES)}")
    return _VALUE_MAPPERS[space]


def map_values(label: str, space: str) -> dict[str, float]:
    """``label`` placed in the numeric space ``space`` (:data:`VALUE_SPACES`): dimension name -> value."""
    return value_mapper(space)(label)


def value_names(space: str) -> list[str]:
    """Dimension names of the numeric space ``space``, in output order."""
    if space not in VALUE_SPACES:
        raise ValueError(f"unknown numeric label space {space!r}; choose one of {sorted(VALUE_SPACES)}")
    return list(VALUE_SPACES[space])


def label_names(space: str, corpus: str | None = None) -> list[str]:
    """Class names of ``space`` in index order; "categories" needs a built-in ``corpus`` name."""
    if space not in LABEL_SPACES:
        raise ValueError(f"unknown label space {space!r}; choose one of {sorted(LABEL_SPACES)}")
    names = LABEL_SPACES[space]
    if names is not None:
        return list(names)
    if corpus not in CORPUS_LABELS:
        raise ValueError(f"'categories' are per corpus: give one of {sorted(CORPUS_LABELS)}, not {corpus!r}")
    return list(CORPUS_LABELS[corpus])


def balanced_subsample(
    items: Sequence[T],
    key: Callable[[T], Hashable],
    seed: int = 0,
    group: Callable[[T], Hashable] | None = None,
) -> list[T]:
    """Cut every class to the size of the minority class, within each group (EmoNet §6.2).

    ``key`` gives an item's class (e.g. ``lambda it: arousal(it.label)``); ``group`` its corpus (``None``: all items
    form one group). Classes absent from a group are ignored: the minority is taken over the classes present. The
    draw is ``random.Random(seed)`` sampling per (group, class) in sorted order, so the result depends only on the
    items, their order and ``seed``. The kept items are returned in their original order.
    """
    by_group: dict[Hashable, dict[Hashable, list[int]]] = defaultdict(lambda: defaultdict(list))
    for index, item in enumerate(items):
        by_group[group(item) if group else None][key(item)].append(index)
    rng = random.Random(seed)
    keep: list[int] = []
    for group_name in sorted(by_group, key=repr):
        classes = by_group[group_name]
        minority = min(len(indices) for indices in classes.values())
        for class_name in sorted(classes, key=repr):
            keep.extend(rng.sample(classes[class_name], minority))
    return [items[index] for index in sorted(keep)]


def class_counts(items: Sequence[T], key: Callable[[T], Hashable]) -> dict[Hashable, int]:
    """Number of items per class, classes in sorted order."""
    counts = Counter(key(item) for item in items)
    return {name: counts[name] for name in sorted(counts, key=repr)}
