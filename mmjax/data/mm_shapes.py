"""`mm_shapes`: the built-in text+image dataset, generated locally (no download).

Each example is a 32x32 RGB image of a shape painted red, green or blue (the shape's outline,
position and size are random), and a short sentence that names a shape word ("circle", "square",
"triangle") in one of seven templates after 0-2 random filler words (1 to 10 tokens, right-padded
to 12). The drawn outline is independent of the shape word and the sentence names no colour, so

    label = 3 · shape_word + paint_colour            (9 classes)

needs BOTH modalities: the best image-only or text-only classifier is right about 1/3 of the time.
Labels are then replaced with probability ε = 0.1 by a uniformly random class (possibly the same
one). Colours and words are recoverable without error by construction (the paint's dominant
channel is at least 0.35 above the others, and the shape word is always present), so the
Bayes-optimal accuracy is

    1 − ε + ε/K = 1 − 0.1 + 0.1/9 = 0.9111…   (and ε/K + (1 − ε)/3 = 0.3111… from one modality).

Every example is a pure function of (seed, split, index): the same files on every machine.
"""
from typing import Dict, Iterator, Tuple

import numpy as np
import tensorflow_datasets as tfds

IMAGE_SIZE = 32
MAX_TEXT_LENGTH = 12
SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue")
NUM_CLASSES = len(SHAPES) * len(COLOURS)
LABEL_NOISE = 0.1
BAYES_ACCURACY = 1 - LABEL_NOISE + LABEL_NOISE / NUM_CLASSES
UNIMODAL_BAYES_ACCURACY = LABEL_NOISE / NUM_CLASSES + (1 - LABEL_NOISE) / len(COLOURS)
PAD_ID, UNKNOWN_ID = 0, 1
_FILLER = ("a", "the", "this", "that", "one", "is", "it", "looks", "painted", "mostly", "quite",
           "thing", "object", "item", "i", "think", "see", "maybe", "very", "and", "of", "to",
           "me", "please", "bright", "dark", "shape", "here", "there", "now")
_TEMPLATES = (
    "{s}",
    "a {s}",
    "the shape is a {s}",
    "it is drawn as a {s}",
    "this object looks like a {s} to me",
    "i think it is a {s}",
    "{s} is the shape here",
)
VOCABULARY = ("<pad>", "<unk>") + SHAPES + _FILLER + ("drawn", "as", "like")
WORD_IDS = {word: i for i, word in enumerate(VOCABULARY)}
SPLITS = {"train": (0, 9000), "validation": (1, 1000), "test": (2, 2000)}


def tokenize(sentence: str) -> np.ndarray:
  """Words -> ids padded with PAD_ID to MAX_TEXT_LENGTH (int32)."""
  ids = [WORD_IDS.get(word, UNKNOWN_ID) for word in sentence.split()][:MAX_TEXT_LENGTH]
  return np.asarray(ids + [PAD_ID] * (MAX_TEXT_LENGTH - len(ids)), np.int32)


def draw_shape(shape: int, colour: int, rng: np.random.Generator) -> np.ndarray:
  """A (32, 32, 3) uint8 image of `SHAPES[shape]` painted `COLOURS[colour]` over a noisy
  background; the paint's `colour` channel is in [0.75, 1], the others in [0, 0.4]."""
  radius = rng.uniform(5.5, 10.0)
  cy, cx = rng.uniform(radius + 1, IMAGE_SIZE - radius - 1, size=2)
  y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5
  dy, dx = y - cy, x - cx
  if SHAPES[shape] == "circle":
    inside = dy ** 2 + dx ** 2 <= radius ** 2
  elif SHAPES[shape] == "square":
    half = radius * 0.8
    inside = (np.abs(dy) <= half) & (np.abs(dx) <= half)
  else:  # triangle pointing up, apex at the top
    inside = (dy >= -radius) & (dy <= radius * 0.7) & (np.abs(dx) <= (dy + radius) * 0.6)
  background = rng.normal(0.12, 0.05, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
  paint = rng.uniform(0.0, 0.4, size=3)
  paint[colour] = rng.uniform(0.75, 1.0)
  image = np.where(inside[..., None], paint + rng.normal(0, 0.03, size=(IMAGE_SIZE, IMAGE_SIZE, 3)),
                   background)
  return np.clip(image * 255, 0, 255).astype(np.uint8)


def make_example(seed: int, split_id: int, index: int) -> Dict[str, np.ndarray]:
  """The example at `index` of a split: a pure function of its arguments."""
  rng = np.random.default_rng([seed, split_id, index])
  shape_word, colour = rng.integers(len(SHAPES)), rng.integers(len(COLOURS))
  label = len(COLOURS) * shape_word + colour
  if rng.random() < LABEL_NOISE:
    label = rng.integers(NUM_CLASSES)
  template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
  filler = " ".join(_FILLER[i] for i in rng.integers(len(_FILLER), size=rng.integers(3)))
  return {
      "image": draw_shape(rng.integers(len(SHAPES)), colour, rng),
      "text": tokenize(f"{filler} {template.format(s=SHAPES[shape_word])}"),
      "label": int(label),
      "shape": int(shape_word),
      "colour": int(colour),
  }


class MmShapes(tfds.core.GeneratorBasedBuilder):
  """The built-in text+image dataset (see the module docstring for its Bayes accuracy)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  SEED = 0

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8),
            "text": tfds.features.Tensor(shape=(MAX_TEXT_LENGTH,), dtype=np.int32),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            "shape": tfds.features.ClassLabel(names=SHAPES),
            "colour": tfds.features.ClassLabel(names=COLOURS),
        }),
        supervised_keys=None,
        metadata=tfds.core.MetadataDict(bayes_accuracy=BAYES_ACCURACY,
                                        vocabulary_size=len(VOCABULARY)),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {name: self._generate_examples(split_id, size)
            for name, (split_id, size) in SPLITS.items()}

  def _generate_examples(self, split_id: int, size: int) -> Iterator[Tuple[int, Dict]]:
    for index in range(size):
      yield index, make_example(self.SEED, split_id, index)


def model_inputs(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """A stacked batch of examples -> the model's batch dict (image scaled to [0, 1], text mask)."""
  return {
      "image": batch["image"].astype(np.float32) / 255.0,
      "text": batch["text"],
      "text_mask": batch["text"] != PAD_ID,
      "label": batch["label"].astype(np.int32),
      "shape": batch["shape"].astype(np.int32),
      "colour": batch["colour"].astype(np.int32),
  }
