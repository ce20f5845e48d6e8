"""Label vocabularies and the EmoNet Table 2 arousal/valence map."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from sermodels import labels
from sermodels.data import emodb, emovo, load_corpus, ravdess, urdu


def test_table2_cells_have_the_papers_sizes():
    cells = Counter(labels.CIRCUMPLEX.values())
    assert cells == {
        ("low", "negative"): 13,
        ("low", "neutral"): 6,
        ("low", "positive"): 5,
        ("high", "negative"): 8,
        ("high", "neutral"): 6,
        ("high", "positive"): 9,
    }
    assert len(labels.CIRCUMPLEX) == 47  # no category listed twice


@pytest.mark.parametrize("corpus", sorted(labels.CORPUS_LABELS))
def test_every_corpus_label_maps_to_every_space(corpus):
    for label in labels.CORPUS_LABELS[corpus]:
        assert labels.arousal(label) in labels.AROUSAL_CLASSES
        assert labels.valence(label) in labels.VALENCE_CLASSES
        assert labels.binary_valence(label) in labels.BINARY_VALENCE_CLASSES
        for space, names in labels.LABEL_SPACES.items():
            if not labels.in_label_set(label, space):  # only a shared set leaves categories out
                assert space in labels.SHARED_SETS
                continue
            mapped = labels.map_label(label, space)
            assert mapped == label if names is None else mapped in names


def test_loader_codes_use_exactly_the_label_vocabularies():
    assert set(emodb.EMOTIONS.values()) == set(labels.CORPUS_LABELS["emodb"])
    assert list(ravdess.EMOTIONS.values()) == list(labels.CORPUS_LABELS["ravdess"])
    assert set(emovo.EMOTIONS.values()) == set(labels.CORPUS_LABELS["emovo"])
    assert set(urdu.FOLDERS.values()) == set(labels.CORPUS_LABELS["urdu"])


@pytest.mark.parametrize(
    ("label", "arousal", "valence"),
    [
        ("anger", "high", "negative"),
        ("boredom", "low", "neutral"),
        ("disgust", "low", "negative"),
        ("fear", "high", "negative"),
        ("happiness", "high", "positive"),
        ("sadness", "low", "negative"),
        ("neutral", "low", "neutral"),
        ("joy", "high", "positive"),
        ("surprise", "high", "neutral"),
        # synonyms map like their Table 2 forms
        ("happy", "high", "positive"),
        ("sad", "low", "negative"),
        ("angry", "high", "negative"),
        ("fearful", "high", "negative"),
        ("surprised", "high", "neutral"),
        # our documented placement
        ("calm", "low", "positive"),
        ("Anger", "high", "negative"),
    ],
)
def test_placements(label, arousal, valence):
    assert labels.arousal(label) == arousal
    assert labels.valence(label) == valence
    assert labels.binary_valence(label) == ("positive" if valence == "positive" else "non-positive")


def test_unknown_label_is_named():
    with pytest.raises(labels.UnknownLabelError, match="'frobnication'"):
        labels.arousal("frobnication")
    with pytest.raises(ValueError, match="unknown label space 'dominance'"):
        labels.map_label("anger", "dominance")


def test_label_names():
    assert labels.label_names("valence") == ["negative", "neutral", "positive"]
    assert labels.label_names("categories", "urdu") == ["angry", "happy", "neutral", "sad"]
    with pytest.raises(ValueError, match="per corpus"):
        labels.label_names("categories")


# Each corpus vocabulary in the shared sets: corpus word -> class, None for a word outside the set.
SHARED_SET_MAPS = {
    "basic4": {
        "emodb": {
            "anger": "anger",
            "boredom": None,
            "disgust": None,
            "fear": None,
            "happiness": "happiness",
            "sadness": "sadness",
            "neutral": "neutral",
        },
        "ravdess": {
            "neutral": "neutral",
            "calm": None,
            "happy": "happiness",
            "sad": "sadness",
            "angry": "anger",
            "fearful": None,
            "disgust": None,
            "surprised": None,
        },
        "emovo": {
            "disgust": None,
            "joy": "happiness",
            "neutral": "neutral",
            "fear": None,
            "anger": "anger",
            "surprise": None,
            "sadness": "sadness",
        },
        "urdu": {"angry": "anger", "happy": "happiness", "neutral": "neutral", "sad": "sadness"},
    },
    "basic6": {
        "emodb": {
            "anger": "anger",
            "boredom": None,
            "disgust": "disgust",
            "fear": "fear",
            "happiness": "happiness",
            "sadness": "sadness",
            "neutral": None,
        },
        "ravdess": {
            "neutral": None,
            "calm": None,
            "happy": "happiness",
            "sad": "sadness",
            "angry": "anger",
            "fearful": "fear",
            "disgust": "disgust",
            "surprised": "surprise",
        },
        "emovo": {
            "disgust": "disgust",
            "joy": "happiness",
            "neutral": None,
            "fear": "fear",
            "anger": "anger",
            "surprise": "surprise",
            "sadness": "sadness",
        },
        "urdu": {"angry": "anger", "happy": "happiness", "neutral": None, "sad": "sadness"},
    },
}


def test_shared_sets_are_label_spaces_in_sorted_folder_order():
    assert labels.SHARED_SETS == {
        "basic4": ("anger", "happiness", "neutral", "sadness"),
        "basic6": ("anger", "disgust", "fear", "happiness", "sadness", "surprise"),
    }
    for space, names in labels.SHARED_SETS.items():
        assert names == tuple(sorted(names))  # a class-folder corpus's sorted folder names
        assert labels.LABEL_SPACES[space] == names
        assert labels.label_names(space) == list(names)


@pytest.mark.parametrize("space", sorted(labels.SHARED_SETS))
@pytest.mark.parametrize("corpus", sorted(labels.CORPUS_LABELS))
def test_shared_set_map_of_every_corpus_vocabulary(space, corpus):
    expected = SHARED_SET_MAPS[space][corpus]
    assert list(expected) == list(labels.CORPUS_LABELS[corpus])  # every word of the vocabulary, none invented
    for word, name in expected.items():
        assert labels.in_label_set(word, space) is (name is not None)
        if name is None:
            with pytest.raises(labels.OutsideLabelSet):
                labels.map_label(word, space)
        else:
            assert labels.map_label(word, space) == name


def test_shared_sets_cover_the_classes_the_corpora_share():
    def shared(space):
        kept = [{labels.map_label(w, space) for w in words if labels.in_label_set(w, space)} for words in vocabularies]
        return set.intersection(*kept)

    vocabularies = labels.CORPUS_LABELS.values()
    assert shared("basic4") == set(labels.SHARED_SETS["basic4"])  # all four in every corpus
    assert shared("basic6") == {"anger", "happiness", "sadness"}  # URDU has none of the other three


def test_outside_label_set_and_unknown_label_are_told_apart():
    with pytest.raises(labels.OutsideLabelSet, match=r"'boredom' is outside the label set 'basic4' \(anger, happi"):
        labels.map_label("boredom", "basic4")
    with pytest.raises(labels.OutsideLabelSet) as outside:
        labels.map_label("neutral", "basic6")
    assert (outside.value.label, outside.value.space) == ("neutral", "basic6")
    assert isinstance(outside.value, ValueError) and not isinstance(outside.value, labels.UnknownLabelError)
    for space in labels.SHARED_SETS:
        with pytest.raises(labels.UnknownLabelError, match="'frobnication'"):
            labels.map_label("frobnication", space)
        with pytest.raises(labels.UnknownLabelError, match="'frobnication'"):
            labels.in_label_set("frobnication", space)  # a typo is an error, never taken for "outside the set"
    assert labels.map_label("Joy", "basic6") == "happiness"  # case and the set synonym
    assert labels.arousal("joy") == "high" and labels.map_label("joy", "categories") == "joy"  # joy elsewhere as is
    assert labels.in_label_set("calm", "arousal") and labels.in_label_set("whatever", "categories")
    with pytest.raises(labels.UnknownLabelError):
        labels.in_label_set("frobnication", "valence")
    with pytest.raises(ValueError, match="unknown label space 'basic5'"):
        labels.in_label_set("anger", "basic5")


@dataclass(frozen=True)
class Thing:
    name: int
    cls: str
    group: str


def _things():
    # group a: 5 x, 2 y, 3 z; group b: 4 x, 7 y
    spec = {"a": {"x": 5, "y": 2, "z": 3}, "b": {"x": 4, "y": 7}}
    out, n = [], 0
    for group, counts in spec.items():
        for cls, count in counts.items():
            for _ in range(count):
                out.append(Thing(n, cls, group))
                n += 1
    return out


def test_balanced_subsample_cuts_each_group_to_its_minority():
    items = _things()
    kept = labels.balanced_subsample(items, key=lambda t: t.cls, seed=3, group=lambda t: t.group)
    counts = Counter((t.group, t.cls) for t in kept)
    assert counts == {("a", "x"): 2, ("a", "y"): 2, ("a", "z"): 2, ("b", "x"): 4, ("b", "y"): 4}
    assert [t.name for t in kept] == sorted(t.name for t in kept)  # original order kept
    again = labels.balanced_subsample(items, key=lambda t: t.cls, seed=3, group=lambda t: t.group)
    assert again == kept
    others = [labels.balanced_subsample(items, key=lambda t: t.cls, seed=s, group=lambda t: t.group) for s in range(5)]
    assert any(o != kept for o in others)  # the seed matters


def test_balanced_subsample_on_emodb_arousal_and_valence(emodb_root):
    items = load_corpus("emodb", emodb_root).items
    by_arousal = labels.balanced_subsample(items, key=lambda it: labels.arousal(it.label), seed=0)
    # low = boredom 81 + disgust 46 + sadness 62 + neutral 79 = 268; high = anger 127 + fear 69 + happiness 71 = 267
    assert Counter(labels.arousal(it.label) for it in by_arousal) == {"low": 267, "high": 267}
    by_valence = labels.balanced_subsample(items, key=lambda it: labels.valence(it.label), seed=0)
    # positive = happiness 71 is the minority
    assert Counter(labels.valence(it.label) for it in by_valence) == {"negative": 71, "neutral": 71, "positive": 71}


@pytest.mark.parametrize("corpus", sorted(labels.CORPUS_LABELS))
def test_av_values_place_every_corpus_label_on_the_levels(corpus):
    for label in labels.CORPUS_LABELS[corpus]:
        values = labels.av_values(label)
        assert list(values) == labels.value_names("av_values") == ["arousal", "valence"]
        level_arousal, level_valence = labels.placement(label)
        assert values["arousal"] == {"low": -1.0, "high": 1.0}[level_arousal]
        assert values["valence"] == {"negative": -1.0, "neutral": 0.0, "positive": 1.0}[level_valence]
        assert labels.map_values(label, "av_values") == values


def test_av_values_examples_and_errors():
    assert labels.av_values("anger") == {"arousal": 1.0, "valence": -1.0}
    assert labels.av_values("Boredom") == {"arousal": -1.0, "valence": 0.0}
    assert labels.av_values("happy") == {"arousal": 1.0, "valence": 1.0}
    assert labels.av_values("calm") == {"arousal": -1.0, "valence": 1.0}  # our placement, not Table 2's
    assert labels.value_mapper("av_values") is labels.av_values
    with pytest.raises(labels.UnknownLabelError, match="'contentment'"):
        labels.av_values("contentment")
    with pytest.raises(ValueError, match="unknown numeric label space 'arousal'"):
        labels.map_values("anger", "arousal")
    assert "av_values" not in labels.LABEL_SPACES  # class spaces and numeric spaces stay apart
