"""Captions for `shapes` images: shape, colour and background named in varied wording.

The generator returns each image's class and base colour; the rest is derived here:

- colour name: the base RGB colour named by hue, saturation and value (``colour_name``);
- background kind: ``photo`` (a crop of a shipped photograph) or ``pattern`` (procedural
  noise). The generator's per-image stream decides this with its first draw, so replaying
  that one draw from the same seed gives the kind exactly (``background_kinds``);
- background tone: ``dark`` or ``light``, the mean luminance of the pixels outside the mask.

A caption picks one of ``TEMPLATES`` (some name all attributes, some only the shape and
colour, some only the shape) and a synonym for the background. ``CaptionTokenizer`` turns
text into a compact vocabulary of open_clip's BPE tokens (the tokenizer ships with
open_clip, so it works offline).
"""

from __future__ import annotations

import colorsys
import functools
import importlib.util
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from syllabus.data import shapes
from syllabus.errors import UsageError

COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "white", "gray", "black")
_HUE_NAMES = ((15, "red"), (45, "orange"), (70, "yellow"), (165, "green"), (200, "cyan"), (260, "blue"),
              (300, "purple"), (345, "pink"), (360, "red"))  # (upper hue bound in degrees, name)
BACKGROUND_WORDS = {"photo": ("photo", "photograph", "photographic"), "pattern": ("pattern", "noise", "noisy")}
TONES = ("dark", "light")
TONE_THRESHOLD = 112.0  # luminance (0-255) splitting the backgrounds roughly in half (median, 600 images)

TEMPLATES = (
    "a {colour} {shape} on a {tone} {background} background.",
    "a {shape} in {colour} over a {background}.",
    "{colour} {shape}",
    "a picture of a {colour} {shape} against a {tone} {background} background.",
    "the {shape} is {colour}.",
    "a {shape}.",
    "a {colour} {shape} shape.",
    "a {tone} {background} background behind a {colour} {shape}.",
    "a drawing of a {shape}.",
    "{shape} , {colour} , {background}",
)


def colour_name(rgb: np.ndarray) -> str:
    """The name in ``COLOURS`` of one (3,) uint8 colour."""
    h, s, v = colorsys.rgb_to_hsv(*(np.asarray(rgb, float) / 255))
    if v < 0.25:
        return "black"
    if s < 0.25:
        return "white" if v > 0.8 else "gray"
    degrees = 360 * h
    return next(name for bound, name in _HUE_NAMES if degrees < bound)


def background_kinds(n: int, generation_seed: int) -> list[str]:
    """``photo`` or ``pattern`` for images ``0..n-1`` of ``generate_shapes(n, size, generation_seed)``.

    Replays only the first draw of each image's own stream, the one that picks the background.
    """
    return ["photo" if np.random.default_rng([generation_seed, 0, i]).random() < shapes._PHOTO_P else "pattern"
            for i in range(n)]


def background_tones(images: np.ndarray, masks: np.ndarray) -> list[str]:
    """``dark`` or ``light`` from the mean luminance outside the object. images (N, S, S, 3), masks (N, S, S)."""
    lum = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # (N, S, S)
    outside = ~masks
    mean = (lum * outside).sum((1, 2)) / np.maximum(outside.sum((1, 2)), 1)  # (N,)
    return [TONES[int(m >= TONE_THRESHOLD)] for m in mean]


@dataclass
class Attributes:
    """Per-image attributes of one split, each a list of N strings."""

    shape: list[str]
    colour: list[str]
    background: list[str]
    tone: list[str]

    def __len__(self) -> int:
        return len(self.shape)

    def combos(self) -> list[tuple[str, str]]:
        """(colour, shape) of every image."""
        return list(zip(self.colour, self.shape))


def split_attributes(arrays: dict[str, np.ndarray], generation_seed: int) -> Attributes:
    """Attributes of the images of one split (``load_shapes_split`` output) made from ``generation_seed``."""
    if "colors" not in arrays:
        raise UsageError("this shapes cache has no object colours; delete it so that it is regenerated")
    classes = [str(c) for c in arrays["classes"]]
    return Attributes(
        shape=[classes[int(y)] for y in arrays["labels"]],
        colour=[colour_name(c) for c in arrays["colors"]],
        background=background_kinds(len(arrays["labels"]), generation_seed),
        tone=background_tones(arrays["images"], arrays["masks"]),
    )


def caption(shape: str, colour: str, background: str, tone: str, rng: np.random.Generator) -> str:
    """One caption of an image, its wording drawn from ``rng``."""
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    words = BACKGROUND_WORDS[background]
    return template.format(shape=shape, colour=colour, tone=tone, background=words[rng.integers(len(words))])


def captions_for(attrs: Attributes, per_image: int, seed: int) -> list[list[str]]:
    """``per_image`` captions of each image, drawn deterministically from ``seed``. (N, per_image)."""
    rng = np.random.default_rng([seed, 7])
    return [[caption(s, c, b, t, rng) for _ in range(per_image)]
            for s, c, b, t in zip(attrs.shape, attrs.colour, attrs.background, attrs.tone)]


def caption_corpus() -> list[str]:
    """Texts holding every word a caption can contain: each template filled with each attribute value.

    BPE splits text into words before merging, so these give the vocabulary of every caption.
    """
    backgrounds = list(itertools.chain(*BACKGROUND_WORDS.values()))
    names = ("shape", "colour", "tone", "background")
    values = (shapes.SHAPE_CLASSES, COLOURS, TONES, backgrounds)
    longest = max(len(v) for v in values)
    return [t.format(**{k: v[i % len(v)] for k, v in zip(names, values)}) for t in TEMPLATES for i in range(longest)]


@functools.lru_cache(maxsize=1)
def _bpe_tokenizer():
    """open_clip's ``SimpleTokenizer``, loaded from its own file.

    ``import open_clip.tokenizer`` first runs the package's ``__init__``, which imports
    transformers, timm and torchvision (10-25 s on a busy 2-core CPU); the tokenizer module
    imports none of the package, so it is loaded by itself (about 0.5 s).
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("open_clip is not installed; pip install open_clip_torch")
    path = Path(spec.submodule_search_locations[0]) / "tokenizer.py"
    module_spec = importlib.util.spec_from_file_location("_syllabus_open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.SimpleTokenizer()


class CaptionTokenizer:
    """open_clip's BPE tokenizer with its ids mapped to a compact vocabulary.

    Id 0 is padding, 1 an unknown token (any BPE token absent from ``corpus``), 2.. the
    tokens of ``corpus`` in order of their open_clip id. The start and end tokens are
    always in the vocabulary, so a sequence is ``<start> tokens <end> 0 0 ...``.

    Args:
        corpus: texts whose tokens form the vocabulary.
        context_length: length of every token sequence (longer texts are cut, keeping <end>).
    """

    PAD, UNK = 0, 1

    def __init__(self, corpus: list[str], context_length: int = 24):
        self.bpe = _bpe_tokenizer()
        self.context_length = context_length
        ids = {self.bpe.sot_token_id, self.bpe.eot_token_id}
        for text in corpus:
            ids.update(self.bpe.encode(text))
        self.vocab = sorted(ids)  # open_clip ids, position + 2 = our id
        self._lookup = {bpe_id: i + 2 for i, bpe_id in enumerate(self.vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + 2

    def __call__(self, texts: list[str]) -> torch.Tensor:
        """(N,) texts -> (N, context_length) int64 ids."""
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        sot, eot = self._lookup[self.bpe.sot_token_id], self._lookup[self.bpe.eot_token_id]
        for i, text in enumerate(texts):
            body = [self._lookup.get(t, self.UNK) for t in self.bpe.encode(text)][: self.context_length - 2]
            ids = [sot, *body, eot]
            out[i, : len(ids)] = torch.tensor(ids)
        return out
