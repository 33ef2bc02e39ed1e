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

Version 1.1.0 adds labels of the same examples (the 1.0.0 fields are byte-identical: the new
randomness is drawn after all of 1.0.0's draws, from the same per-example generator):

- `outline` (3 classes): the outline drawn, independent of the text. The image shows it without
  noise (the painted pixels fill about π/4 of their bounding box for a circle, all of it for a
  square, about 1/2 for a triangle; 0.67–0.90, 1.0 and 0.48–0.63 measured), so the best accuracy
  is 1.0 from the image and 1/3 from the text alone.
- `size` (float32): the drawn radius r ~ U(5.5, 10) px plus label noise n ~ N(0, σ²), σ = 0.5,
  independent of everything. For any predictor f, E(f − r − n)² = E(f − r)² + σ² ≥ σ² = 0.25 and
  E|f − r − n| ≥ E|n| = σ·√(2/π) ≈ 0.399 (n is symmetric about 0). The text says nothing about r,
  so the best text-only (or constant) prediction is E r = 7.75, with MSE Var(r) + σ² = 4.5²/12 +
  0.25 = 1.9375. The image pins r down only to which pixel centres the shape covers, which adds a
  little to the floor: regressing size on √(painted pixel count) per outline, fitted on train,
  gives MSE 0.279 and MAE 0.420 on the test split (0.269 and 0.412 on its labelled examples).
- `size_labelled` (bool): False for a random SIZE_LABEL_MISSING = 25% of examples, drawn
  independently of everything else; `model_inputs` emits it as `size_mask`, and the size loss and
  metrics must count only examples where it is True. `size` still holds the true noisy value where
  the label is missing: the mask alone marks it missing. Being independent, the mask keeps the
  labelled examples a uniform sample, so the floors above hold on them.
- `shapes_present` (multi-hot over SHAPES, int32 (3,)): the shape word's shape OR the drawn
  outline, so 1 positive with probability 1/3 (they agree) and 2 with probability 2/3. Both
  modalities together determine it exactly (micro- and macro-F1 1.0). From the text alone, the
  word's shape is present for sure and each other shape with probability q = 1/3 (the outline).
  With expected counts per example, F* is the best micro-F1 = 2TP/(2TP + FP + FN) iff the
  largest E[2TP − F*·(2TP + FP + FN)] over rules is 0; predicting a label present with probability
  q adds 2q − F* to it, so the best rule predicts exactly the labels with q > F*/2. Predicting only
  the word's shape (TP = 1, FP = 0, FN = 2/3) gives F* = 2/(2 + 2/3) = 3/4, and 1/3 < 3/8 confirms
  it (adding one other shape gives 8/11, all three 5/7). The same argument per class (TP = 1/3,
  FN = 2/9) gives each class's best F1, hence macro-F1, 3/4. The image alone is symmetric (the
  outline sure, the word uniform): 3/4 as well. Exact-set accuracy from one modality is 1/3.

Every example is a pure function of (seed, split, index): the same files on every machine.
"""
import math
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
OUTLINE_BAYES_ACCURACY = 1.0
OUTLINE_TEXT_ONLY_ACCURACY = 1 / len(SHAPES)
RADIUS_RANGE = (5.5, 10.0)
SIZE_NOISE_STD = 0.5
SIZE_LABEL_MISSING = 0.25
SIZE_MSE_FLOOR = SIZE_NOISE_STD ** 2
SIZE_MAE_FLOOR = SIZE_NOISE_STD * math.sqrt(2 / math.pi)
SIZE_CONSTANT_MSE = (RADIUS_RANGE[1] - RADIUS_RANGE[0]) ** 2 / 12 + SIZE_NOISE_STD ** 2
SHAPES_PRESENT_BAYES_F1 = 1.0
SHAPES_PRESENT_UNIMODAL_F1 = 3 / 4  # 2TP / (2TP + FP + FN) = 2 / (2 + 0 + 2/3)
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


def draw_shape(shape: int, colour: int, rng: np.random.Generator) -> Tuple[np.ndarray, float]:
  """(image, radius): a (32, 32, 3) uint8 image of `SHAPES[shape]` painted `COLOURS[colour]` over a
  noisy background, and the shape's radius in pixels, uniform over `RADIUS_RANGE`. The paint's
  `colour` channel is in [0.75, 1], the others in [0, 0.4]."""
  radius = rng.uniform(*RADIUS_RANGE)
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
  return np.clip(image * 255, 0, 255).astype(np.uint8), float(radius)


def make_example(seed: int, split_id: int, index: int) -> Dict[str, np.ndarray]:
  """The example at `index` of a split: a pure function of its arguments."""
  rng = np.random.default_rng([seed, split_id, index])
  shape_word, colour = rng.integers(len(SHAPES)), rng.integers(len(COLOURS))
  label = len(COLOURS) * shape_word + colour
  if rng.random() < LABEL_NOISE:
    label = rng.integers(NUM_CLASSES)
  template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
  filler = " ".join(_FILLER[i] for i in rng.integers(len(_FILLER), size=rng.integers(3)))
  outline = rng.integers(len(SHAPES))
  image, radius = draw_shape(outline, colour, rng)
  # Version 1.1.0's draws come after all of 1.0.0's, so 1.0.0's fields are unchanged.
  size = radius + rng.normal(0.0, SIZE_NOISE_STD)
  size_labelled = rng.random() >= SIZE_LABEL_MISSING
  shapes_present = np.zeros(len(SHAPES), np.int32)
  shapes_present[[shape_word, outline]] = 1
  return {
      "image": image,
      "text": tokenize(f"{filler} {template.format(s=SHAPES[shape_word])}"),
      "label": int(label),
      "shape": int(shape_word),
      "colour": int(colour),
      "outline": int(outline),
      "size": np.float32(size),
      "size_labelled": bool(size_labelled),
      "shapes_present": shapes_present,
  }


class MmShapes(tfds.core.GeneratorBasedBuilder):
  """The built-in text+image dataset (see the module docstring for its Bayes accuracy)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "First release.",
      "1.1.0": "Labels `outline`, `size` (with `size_labelled`) and `shapes_present` from the same "
               "examples; every 1.0.0 field is unchanged.",
  }
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
            "outline": tfds.features.ClassLabel(names=SHAPES),
            "size": tfds.features.Scalar(dtype=np.float32),
            "size_labelled": tfds.features.Scalar(dtype=np.bool_),
            "shapes_present": tfds.features.Tensor(shape=(len(SHAPES),), dtype=np.int32),
        }),
        supervised_keys=None,
        metadata=tfds.core.MetadataDict(
            bayes_accuracy=BAYES_ACCURACY, vocabulary_size=len(VOCABULARY),
            outline_bayes_accuracy=OUTLINE_BAYES_ACCURACY, size_mse_floor=SIZE_MSE_FLOOR,
            size_mae_floor=SIZE_MAE_FLOOR, size_constant_mse=SIZE_CONSTANT_MSE,
            size_label_missing=SIZE_LABEL_MISSING,
            shapes_present_bayes_f1=SHAPES_PRESENT_BAYES_F1,
            shapes_present_unimodal_f1=SHAPES_PRESENT_UNIMODAL_F1),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {name: self._generate_examples(split_id, size)
            for name, (split_id, size) in SPLITS.items()}

  def _generate_examples(self, split_id: int, size: int) -> Iterator[Tuple[int, Dict]]:
    for index in range(size):
      yield index, make_example(self.SEED, split_id, index)


def model_inputs(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """A stacked batch of examples -> the model's batch dict (image scaled to [0, 1], text mask,
  `size_mask` True where the size label counts, multi-hot `shapes_present` as float32 `(B, 3)`)."""
  return {
      "image": batch["image"].astype(np.float32) / 255.0,
      "text": batch["text"],
      "text_mask": batch["text"] != PAD_ID,
      "label": batch["label"].astype(np.int32),
      "shape": batch["shape"].astype(np.int32),
      "colour": batch["colour"].astype(np.int32),
      "outline": batch["outline"].astype(np.int32),
      "size": batch["size"].astype(np.float32),
      "size_mask": batch["size_labelled"].astype(bool),
      "shapes_present": batch["shapes_present"].astype(np.float32),
  }


def random_batch(batch_size: int, seed: int = 0) -> Dict[str, np.ndarray]:
  """A model batch shaped as `model_inputs` makes of mm_shapes with random content (the label
  only): tokens (B, 12) of random lengths with their mask, images (B, 32, 32, 3) in [0, 1],
  labels; for benchmarks and device checks that need no dataset."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, MAX_TEXT_LENGTH + 1, batch_size)
  return {"text": rng.integers(2, 30, (batch_size, MAX_TEXT_LENGTH)).astype(np.int32),
          "text_mask": np.arange(MAX_TEXT_LENGTH) < lengths[:, None],
          "image": rng.uniform(size=(batch_size, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32),
          "label": rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)}
