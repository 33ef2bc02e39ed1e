"""Pretrained word vectors (GloVe and the like) for the text encoders' token embeddings.

Two steps, because the encoders see token ids, not words: `load_word_vectors` aligns a
GloVe-format text file with a dataset's vocabulary once (`np.save(path, table)`), and a text
encoder with `embedding_path=path` initialises its embedding from that `(V, E)` table. Reading the
`.npy` at init is instant where a GloVe file (up to 5 GB) takes minutes, and the checkpoint then
holds the table, so applying a trained model never needs the file.
"""
import itertools
from typing import Sequence

import jax.numpy as jnp
import numpy as np


def load_word_vectors(path: str, vocabulary: Sequence[str], dim: int, *, seed: int = 0,
                      scale: float = 0.1) -> np.ndarray:
  """`(len(vocabulary), dim)` float32: row i is the vector of `vocabulary[i]` in the GloVe-format
  text file `path` (one `word v_1 ... v_dim` per line, space-separated).

  A word is looked up as it is, then lowercased (GloVe 6B and 42B are lowercase). Words found
  nowhere (and special tokens such as `<pad>`) get rows drawn from N(0, scale²) with `seed`: small
  like the pretrained rows, distinct so that the model can tell them apart, and reproducible.
  The coverage is printed. The last `dim` fields of a line are the vector and the rest the word
  (a few GloVe 840B words contain spaces); a 2-field header line (word2vec's text format) is
  skipped, the first vector must have `dim` values (so a wrong `dim` fails rather than finding
  no word), and the first occurrence of a word wins.
  """
  wanted = set(vocabulary) | {word.lower() for word in vocabulary}
  vectors = {}
  with open(path, encoding="utf-8") as file:
    lines = (line.rstrip().split(" ") for line in file if line.strip())
    first = next(lines, [])
    if len(first) == 2:                                      # word2vec's "count dim" header
      first = next(lines, [])
    if len(first) != dim + 1:
      raise ValueError(f"the first vector in {path} has {max(len(first) - 1, 0)} values, not "
                       f"dim={dim}; pass the file's vector size as dim")
    for fields in itertools.chain([first], lines):
      word = " ".join(fields[:-dim])
      if word in wanted and word not in vectors:
        vectors[word] = np.asarray(fields[-dim:], np.float32)
  table = (np.random.default_rng(seed).normal(size=(len(vocabulary), dim)) * scale).astype(
      np.float32)
  found = 0
  for row, word in enumerate(vocabulary):
    vector = vectors.get(word, vectors.get(word.lower()))
    if vector is not None:
      table[row] = vector
      found += 1
  print(f"mmjax: word vectors for {found:,} of {len(vocabulary):,} vocabulary words "
        f"({100 * found / max(len(vocabulary), 1):.1f}%) from {path}; the rest from "
        f"N(0, {scale}²)")
  return table


def pretrained_init(path: str):
  """A flax initializer that returns the `(V, E)` table saved at `path` (`.npy`), checking that
  its shape is the embedding's `(vocab_size, embedding width)`."""
  def init(key, shape, dtype=jnp.float32):
    del key
    table = np.load(path)
    if table.shape != tuple(shape):
      raise ValueError(f"the word vectors in {path} are {table.shape}, but the embedding is "
                       f"{tuple(shape)} (vocab_size, embedding width); make them agree")
    return jnp.asarray(table, dtype)
  return init
