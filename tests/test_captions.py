"""Caption attributes against the generator's own choices, and the compact tokenizer."""

import numpy as np
import pytest

from syllabus.data import captions, shapes
from syllabus.data.captions import (
    COLOURS,
    CaptionTokenizer,
    background_kinds,
    background_tones,
    captions_for,
    colour_name,
    split_attributes,
)


@pytest.mark.parametrize(("rgb", "name"), [
    ((230, 20, 20), "red"), ((240, 140, 10), "orange"), ((230, 230, 30), "yellow"), ((30, 200, 40), "green"),
    ((20, 210, 220), "cyan"), ((30, 40, 230), "blue"), ((150, 30, 220), "purple"), ((240, 40, 160), "pink"),
    ((250, 250, 245), "white"), ((128, 120, 125), "gray"), ((20, 25, 30), "black"), ((250, 10, 40), "red"),
])
def test_colour_names(rgb, name):
    assert colour_name(np.array(rgb, np.uint8)) == name


def test_background_kind_is_the_generators_own_choice(monkeypatch):
    """Spy on the generator's two background makers and compare with the replayed draw."""
    used = []
    photo, noise = shapes._photo_crop, shapes._noise_texture
    monkeypatch.setattr(shapes, "_photo_crop", lambda rng, size: used.append("photo") or photo(rng, size))
    monkeypatch.setattr(shapes, "_noise_texture", lambda rng, size: used.append("pattern") or noise(rng, size))
    shapes.generate_shapes(40, 32, seed=123)
    assert used == background_kinds(40, 123)
    assert {"photo", "pattern"} == set(used)


def test_tone_reads_the_pixels_outside_the_mask():
    images = np.zeros((2, 4, 4, 3), np.uint8)
    images[1] = 200
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2] = True
    images[0][masks[0]] = 255  # a bright object on a dark background is still dark
    assert background_tones(images, masks) == ["dark", "light"]


def test_split_attributes_and_captions_name_them():
    arrays = shapes.generate_shapes(24, 32, seed=5)
    attrs = split_attributes(arrays, 5)
    assert attrs.shape == [shapes.SHAPE_CLASSES[y] for y in arrays["labels"]]
    assert set(attrs.colour) <= set(COLOURS) and len(set(attrs.colour)) > 2
    texts = captions_for(attrs, per_image=6, seed=0)
    assert texts == captions_for(attrs, per_image=6, seed=0)
    assert len({t for row in texts for t in row}) > 60  # varied wording
    for i, row in enumerate(texts):
        assert all(attrs.shape[i] in t for t in row)
    colour_named = [t for row in texts for t in row if any(c in t.split() for c in COLOURS)]
    assert 0.4 < len(colour_named) / (24 * 6) < 1.0  # some captions omit the colour


def test_tokenizer_maps_corpus_tokens_and_marks_unknown_ones():
    tok = CaptionTokenizer(["a red star.", "a blue ring"], context_length=8)
    ids = tok(["a red star.", "a green star", "a " * 20])
    assert ids.shape == (3, 8)
    assert (ids[0, :6] > 1).all() and (ids[0, 6:] == 0).all()  # <start> a red star . <end>
    assert ids[1, 2].item() == tok.UNK and ids[1, 3] == ids[0, 3]  # "green" unknown, "star" shared
    assert ids[2, -1] == ids[0, 5]  # a cut text still ends with <end>
    assert tok.vocab_size == len(tok.vocab) + 2 < 20


def test_corpus_covers_the_words_of_every_caption():
    corpus = captions.caption_corpus()
    assert not any("{" in w for w in corpus)
    tok = CaptionTokenizer(corpus)
    attrs = split_attributes(shapes.generate_shapes(30, 32, seed=2), 2)
    ids = tok([t for row in captions_for(attrs, 10, seed=3) for t in row])  # (300, L)
    assert (ids != tok.UNK).all()
    assert (tok(["a photo of a star."]) != tok.UNK).all()
    assert (tok(["a blurry photo of a star."]) == tok.UNK).sum() >= 1  # "blurry" is in no caption
