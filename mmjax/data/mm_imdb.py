"""`mm_imdb`: movie genres from plot and poster features (MM-IMDb; Arevalo et al. 2017, "Gated
multimodal units for information fusion"), read from the authors' `multimodal_imdb.hdf5`, the
file MultiBench trains on.

Facts of the file, from the script that wrote it (johnarevalo/gmu-mmimdb `make_dataset.py`, run
with `gmu.json`) and the loader that reads it (pliang279/MultiBench `datasets/imdb/get_data.py`):

- 25,959 movies, one row each, stored train | dev | test. MultiBench slices fixed rows: [0, 15552)
  train, [15552, 18160) validation (the file's `dev`), [18160, 25959) test (15,552 / 2,608 /
  7,799 movies; `SPLITS`). make_dataset.py chose them genre by genre, rarest first: of the movies
  not yet assigned that have the genre, 30% (rounded up) went to test, 10% (rounded up) to dev and
  the rest to train, in a seeded permutation.
- `features` (N, 300) float32: the mean GoogleNews word2vec vector over the words of the plot
  (the longest one when IMDb lists several) that word2vec knows.
- `vgg_features` (N, 4096) float32: the poster's activations after the ReLU of VGG-16's second
  fully connected layer (ImageNet weights; poster centre-cropped and resized to 224x224).
- `genres` (N, 23) int32 multi-hot, one column per genre in `GENRES`: the 23 most frequent genres,
  most frequent first (Drama to Film-Noir), whose names the file keeps as JSON in
  `genres.attrs['target_names']`. Every movie has at least one.
- `imdb_ids` (N,) `S7` bytes: the IMDb title number, e.g. b'0000008'.

The file also holds the posters (`images`) and other text features this builder does not read.
Neither the GMU code nor MultiBench normalises the features (their models batch-normalise), so
they are stored as they are, except that a non-finite value is stored as 0: make_dataset.py
would average an empty list, NaN, for a plot with no word2vec word, and zeros are MultiBench's
text features for such a plot (its robustness test set, `get_data.py`).

Examples keep the file's order: row `SPLITS[split][0] + i` is example `i` of the split.
"""
import json
import os
from typing import Dict, Iterator, Tuple

import numpy as np
import tensorflow_datasets as tfds

FILE = "multimodal_imdb.hdf5"
PUBLISHED_AT = ("http://lisi1.unal.edu.co/mmimdb/multimodal_imdb.hdf5 (linked from the README of "
                "https://github.com/johnarevalo/gmu-mmimdb)")
GENRES = ("Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror",
          "Documentary", "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History",
          "Music", "Animation", "Musical", "Western", "Sport", "Short", "Film-Noir")
TEXT_DIM, IMAGE_DIM = 300, 4096
# Rows [start, stop) of the file per split, as MultiBench slices them; the file must end where the
# test rows do. A module constant rather than a config, so tests patch in tiny splits (a file of
# the official size holds 425 MB of image features).
SPLITS = {"train": (0, 15552), "validation": (15552, 18160), "test": (18160, 25959)}
_CHUNK = 1024  # rows read from the file at a time: a chunk of image features is 16 MiB


def _finite(values: np.ndarray) -> np.ndarray:
  return np.where(np.isfinite(values), values, 0.0).astype(np.float32)


def check_file(file) -> None:
  """Raises ValueError listing every way an open `multimodal_imdb.hdf5` differs from the layout
  the builder reads (see the module docstring)."""
  rows = SPLITS["test"][1]
  expected = {"features": (rows, TEXT_DIM), "vgg_features": (rows, IMAGE_DIM),
              "genres": (rows, len(GENRES)), "imdb_ids": (rows,)}
  problems = [f"`{name}` is missing" if name not in file else
              f"`{name}` has shape {file[name].shape}, expected {shape}"
              for name, shape in expected.items()
              if name not in file or file[name].shape != shape]
  if "genres" in file:
    names = file["genres"].attrs.get("target_names")
    if names is None or tuple(json.loads(names)) != GENRES:
      problems.append(f"genres.attrs['target_names'] is {names!r}, expected the JSON list of "
                      f"{GENRES}")
  if problems:
    raise ValueError(f"{file.filename} is not the MM-IMDb file this builder reads "
                     f"({PUBLISHED_AT}): " + "; ".join(problems))


class MmImdb(tfds.core.GeneratorBasedBuilder):
  """MM-IMDb genres from word2vec plot and VGG poster features (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (f"Place {FILE} in the manual directory; it is published at "
                                  f"{PUBLISHED_AT}.")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "text": tfds.features.Tensor(shape=(TEXT_DIM,), dtype=np.float32),
            "image": tfds.features.Tensor(shape=(IMAGE_DIM,), dtype=np.float32),
            "genres": tfds.features.Tensor(shape=(len(GENRES),), dtype=np.float32),
            "imdb_id": tfds.features.Text(),
        }),
        supervised_keys=None,
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(genres=list(GENRES), num_labels=len(GENRES)),
    )

  def _split_generators(self, dl_manager):
    import h5py  # only this builder needs h5py
    path = os.path.join(dl_manager.manual_dir, FILE)
    if not os.path.exists(path):
      raise FileNotFoundError(f"missing in {dl_manager.manual_dir}: {FILE}, published at "
                              f"{PUBLISHED_AT}")
    with h5py.File(path, "r") as file:
      check_file(file)
    return {name: self._generate_examples(path, start, stop)
            for name, (start, stop) in SPLITS.items()}

  def _generate_examples(self, path: str, start: int, stop: int) -> Iterator[Tuple[int, Dict]]:
    import h5py
    with h5py.File(path, "r") as file:
      for begin in range(start, stop, _CHUNK):
        rows = slice(begin, min(begin + _CHUNK, stop))
        text, image = _finite(file["features"][rows]), _finite(file["vgg_features"][rows])
        genres, ids = file["genres"][rows].astype(np.float32), file["imdb_ids"][rows]
        for i in range(len(ids)):
          yield rows.start + i, {"text": text[i], "image": image[i], "genres": genres[i],
                                 "imdb_id": ids[i].decode("ascii")}


def model_inputs(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """A stacked batch -> the model's batch dict: feature vectors and multi-hot `genres` `(B, 23)`
  (float32, as multilabel tasks read them)."""
  return {"text": batch["text"].astype(np.float32), "image": batch["image"].astype(np.float32),
          "genres": batch["genres"].astype(np.float32)}
