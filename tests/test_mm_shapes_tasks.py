"""mm_shapes 1.1.0's extra labels: the 1.0.0 fields are unchanged, each new label is what the module
docstring says it is, and the documented best values hold on the generated data."""
import hashlib
import itertools
from fractions import Fraction

import numpy as np
import pytest

from mmjax import data
from mmjax.data import mm_shapes

# Fingerprints (sha256 of image and text bytes, image sum, label, shape, colour) from version
# 1.0.0 (`git show 04b7391:mmjax/data/mm_shapes.py`): of make_example(0, split id, index), and of
# the example stored at a position of the generated files (tfds shuffles the examples by key, so
# position and index differ; the order does not depend on the version, so a training run's batches
# are unchanged too). Index 27 of train is one whose label the label noise replaced.
GENERATED_1_0_0 = {
    (0, 0): ("69638eca1d9ae883", 150237, 7, 2, 1),
    (0, 27): ("830e41bbdb371775", 117194, 6, 2, 1),
    (0, 8999): ("108b875eb6a504df", 136463, 0, 0, 0),
    (1, 17): ("f3be3ca1b9fd7455", 109667, 2, 0, 2),
    (2, 1999): ("1146cdcae560730b", 109701, 5, 1, 2),
}
STORED_1_0_0 = {
    ("train", 0): ("5771c6f0df6963ba", 112274, 3, 1, 1),
    ("train", 27): ("9978ca87eabffeef", 112304, 7, 2, 1),
    ("train", 8999): ("4baf7b18c7c4ac72", 156870, 3, 1, 0),
    ("validation", 17): ("57175a261dc0da98", 129596, 2, 0, 2),
    ("test", 1999): ("57be2b6a0978a8e1", 116341, 0, 0, 0),
}


def fingerprint(example):
  digest = hashlib.sha256(example["image"].tobytes() + example["text"].tobytes()).hexdigest()
  return (digest[:16], int(example["image"].sum(dtype=np.int64)), int(example["label"]),
          int(example["shape"]), int(example["colour"]))


@pytest.fixture(scope="module")
def splits(shapes_builder):
  """`{split: (stored features, model inputs)}` of every split, read from the generated files."""
  result = {}
  for name in mm_shapes.SPLITS:
    reader = data.ExampleReader(shapes_builder, name, cache="memory")
    stored = reader.read_examples(np.arange(len(reader)))
    result[name] = (stored, mm_shapes.model_inputs(stored))
  return result


@pytest.fixture(scope="module")
def drawn(splits):
  """The (outline, radius) that `draw_shape` drew for each stored train example, recorded by
  regenerating the examples through a wrapper and matching them to the files by image."""
  calls, draw_shape = [], mm_shapes.draw_shape

  def recording_draw_shape(shape, colour, rng):
    image, radius = draw_shape(shape, colour, rng)
    calls.append((image.tobytes(), shape, radius))
    return image, radius

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(mm_shapes, "draw_shape", recording_draw_shape)
    split_id, size = mm_shapes.SPLITS["train"]
    for index in range(size):
      mm_shapes.make_example(mm_shapes.MmShapes.SEED, split_id, index)
  by_image = {image: (shape, radius) for image, shape, radius in calls}
  stored, _ = splits["train"]
  outline, radius = map(np.asarray, zip(*[by_image[image.tobytes()] for image in stored["image"]]))
  return outline, radius


def test_version_1_0_0_fields_are_unchanged(shapes_builder, splits):
  assert shapes_builder.info.version == "1.1.0"
  for (split_id, index), expected in GENERATED_1_0_0.items():
    assert fingerprint(mm_shapes.make_example(0, split_id, index)) == expected
  for (split, position), expected in STORED_1_0_0.items():
    stored, _ = splits[split]
    assert fingerprint({key: value[position] for key, value in stored.items()}) == expected


def test_model_inputs_keys_dtypes_and_shapes(splits):
  inputs = splits["validation"][1]
  expected = {"image": (np.float32, (32, 32, 3)), "text": (np.int32, (12,)),
              "text_mask": (np.bool_, (12,)), "label": (np.int32, ()), "shape": (np.int32, ()),
              "colour": (np.int32, ()), "outline": (np.int32, ()), "size": (np.float32, ()),
              "size_mask": (np.bool_, ()), "shapes_present": (np.float32, (3,))}
  assert {key: (value.dtype, value.shape[1:]) for key, value in inputs.items()} == expected
  assert all(len(value) == 1000 for value in inputs.values())


def test_info_declares_the_new_labels_and_their_best_values(shapes_builder):
  info = shapes_builder.info
  assert info.features["outline"].names == list(mm_shapes.SHAPES)
  assert info.features["shapes_present"].shape == (3,)
  metadata = info.metadata
  assert metadata["outline_bayes_accuracy"] == 1.0
  assert metadata["size_mse_floor"] == pytest.approx(0.25)
  assert metadata["size_mae_floor"] == pytest.approx(0.5 * np.sqrt(2 / np.pi))
  assert metadata["size_constant_mse"] == pytest.approx(4.5 ** 2 / 12 + 0.25)
  assert metadata["size_label_missing"] == 0.25
  assert metadata["shapes_present_bayes_f1"] == 1.0
  assert metadata["shapes_present_unimodal_f1"] == 0.75


def test_outline_is_the_drawn_shape_and_shapes_present_is_word_or_outline(splits, drawn):
  stored, inputs = splits["train"]
  drawn_outline, _ = drawn
  np.testing.assert_array_equal(stored["outline"], drawn_outline)
  one_hot = np.eye(3, dtype=bool)
  expected = one_hot[stored["shape"]] | one_hot[stored["outline"]]
  np.testing.assert_array_equal(inputs["shapes_present"], expected.astype(np.float32))
  positives = inputs["shapes_present"].sum(axis=1)
  # One positive when word and outline agree (probability 1/3), else two.
  assert set(np.unique(positives)) == {1, 2}
  assert abs(np.mean(positives == 1) - 1 / 3) < 4 * np.sqrt(2 / 9 / len(positives))


def test_the_image_alone_shows_the_outline_and_the_text_does_not(splits):
  """Image-only accuracy 1.0: the painted pixels fill under 0.65 of their bounding box for every
  triangle, 0.65-0.95 for every circle and all of it for every square. Text-only: 1/3."""
  for stored, _ in splits.values():
    painted = stored["image"].max(axis=-1) > 127
    height, width = painted.any(axis=2).sum(axis=1), painted.any(axis=1).sum(axis=1)
    fill = painted.sum(axis=(1, 2)) / (height * width)
    predicted = np.where(fill < 0.65, 2, np.where(fill < 0.95, 0, 1))
    assert np.mean(predicted == stored["outline"]) == mm_shapes.OUTLINE_BAYES_ACCURACY
  stored, _ = splits["train"]
  best_text_only = sum(np.bincount(stored["outline"][stored["shape"] == s], minlength=3).max()
                       for s in range(3)) / len(stored["outline"])
  assert best_text_only < mm_shapes.OUTLINE_TEXT_ONLY_ACCURACY + 0.02


def test_size_is_the_radius_plus_the_documented_noise(splits, drawn):
  """Stored size − drawn radius is N(0, 0.5²) noise, also where the label is missing; so the
  radius itself (the best possible prediction) meets the MSE and MAE floors, and the mean radius
  (the best input-free prediction) the documented constant MSE. Bounds are 4 standard errors."""
  stored, inputs = splits["train"]
  _, radius = drawn
  noise = inputs["size"].astype(np.float64) - radius
  count = len(noise)
  sigma = mm_shapes.SIZE_NOISE_STD
  standard_error = sigma / np.sqrt(count)
  assert abs(noise.mean()) < 4 * standard_error
  assert abs(noise.std() - sigma) < 4 * standard_error / np.sqrt(2)
  missing = noise[~inputs["size_mask"]]
  assert abs(missing.std() - sigma) < 4 * sigma / np.sqrt(2 * len(missing))
  # Var n² = 2σ⁴ and Var |n| = σ²(1 − 2/π).
  assert abs(np.mean(noise ** 2) - mm_shapes.SIZE_MSE_FLOOR) < (
      4 * np.sqrt(2) * sigma * standard_error)
  assert abs(np.mean(np.abs(noise)) - mm_shapes.SIZE_MAE_FLOOR) < (
      4 * np.sqrt(1 - 2 / np.pi) * standard_error)
  constant_errors = (inputs["size"] - np.mean(mm_shapes.RADIUS_RANGE)) ** 2
  assert abs(constant_errors.mean() - mm_shapes.SIZE_CONSTANT_MSE) < (
      4 * constant_errors.std() / np.sqrt(count))
  assert np.all((radius >= 5.5) & (radius < 10.0))


def test_size_labels_are_missing_at_the_documented_rate(splits):
  stored, inputs = splits["train"]
  np.testing.assert_array_equal(inputs["size_mask"], stored["size_labelled"])
  rate = mm_shapes.SIZE_LABEL_MISSING
  missing = np.mean(~inputs["size_mask"])
  assert abs(missing - rate) < 4 * np.sqrt(rate * (1 - rate) / len(inputs["size_mask"]))


def test_size_from_the_painted_area_reaches_the_documented_error(splits):
  """√(painted pixel count) per outline, fitted on train: the module docstring's numbers, a little
  above the noise floor (the data is deterministic, so they are reproduced exactly)."""
  def features(stored):
    count = (stored["image"].max(axis=-1) > 127).sum(axis=(1, 2))
    return np.stack([np.ones(len(count)), np.sqrt(count)], axis=1)

  (train, train_inputs), (test, test_inputs) = splits["train"], splits["test"]
  train_x, test_x = features(train), features(test)
  predicted = np.zeros(len(test_x))
  for outline in range(3):
    fit, chosen = train["outline"] == outline, test["outline"] == outline
    coefficients = np.linalg.lstsq(train_x[fit], train_inputs["size"][fit].astype(np.float64),
                                   rcond=None)[0]
    predicted[chosen] = test_x[chosen] @ coefficients
  errors = predicted - test_inputs["size"]
  labelled = errors[test_inputs["size_mask"]]
  assert np.mean(errors ** 2) == pytest.approx(0.279, abs=5e-4)
  assert np.mean(np.abs(errors)) == pytest.approx(0.420, abs=5e-4)
  assert np.mean(labelled ** 2) == pytest.approx(0.269, abs=5e-4)
  assert np.mean(np.abs(labelled)) == pytest.approx(0.412, abs=5e-4)
  assert mm_shapes.SIZE_MSE_FLOOR < np.mean(errors ** 2) < mm_shapes.SIZE_MSE_FLOOR + 0.05


def f1(tp, fp, fn):
  return 2 * tp / (2 * tp + fp + fn)


def pooled_f1(predicted, truth):
  """F1 of all the (example, class) decisions of boolean arrays pooled: micro-F1 over `(N, 3)`."""
  return f1(np.sum(predicted & truth), np.sum(predicted & ~truth), np.sum(~predicted & truth))


def test_best_one_modality_shapes_present_f1_is_three_quarters_by_enumeration():
  """Exact expected counts over the 9 equally likely (word, outline) pairs. The text determines
  only the word and the outline is independent of the whole text, so a text-only rule is a map
  word -> predicted set (8³ of them); F1 of expected counts is linear-fractional in a randomised
  rule's mixture weights, so the best rule is a deterministic one. Image-only is the same with the
  roles swapped."""
  pairs = list(itertools.product(range(3), repeat=2))
  present = [{word, outline} for word, outline in pairs]
  subsets = [set(s) for r in range(4) for s in itertools.combinations(range(3), r)]
  best_micro = Fraction(0)
  for rule in itertools.product(subsets, repeat=3):
    tp = fp = fn = Fraction(0)
    for (word, _), truth in zip(pairs, present):
      predicted = rule[word]
      tp += Fraction(len(predicted & truth), 9)
      fp += Fraction(len(predicted - truth), 9)
      fn += Fraction(len(truth - predicted), 9)
    best_micro = max(best_micro, f1(tp, fp, fn))
  assert best_micro == Fraction(3, 4) == mm_shapes.SHAPES_PRESENT_UNIMODAL_F1
  # Macro-F1: each class's rule is the set of words for which it is predicted.
  best_per_class = []
  for label in range(3):
    best = Fraction(0)
    for words in subsets:
      tp = sum(Fraction(1, 9) for (word, _), truth in zip(pairs, present)
               if word in words and label in truth)
      fp = sum(Fraction(1, 9) for (word, _), truth in zip(pairs, present)
               if word in words and label not in truth)
      fn = sum(Fraction(1, 9) for (word, _), truth in zip(pairs, present)
               if word not in words and label in truth)
      best = max(best, f1(tp, fp, fn))
    best_per_class.append(best)
  assert sum(best_per_class) / 3 == Fraction(3, 4)


def test_best_one_modality_shapes_present_f1_on_the_data(splits):
  """The best of the 512 word -> set (or outline -> set) rules on train scores the derived 3/4
  micro-F1 within 4 standard errors (4 · (9/32) · √(2/9 / 9000) ≈ 0.0056), and it is the rule
  that predicts the known shape alone; its macro-F1 is 3/4 too."""
  stored, inputs = splits["train"]
  truth = inputs["shapes_present"].astype(bool)
  subsets = np.array([[j in s for j in range(3)]
                      for r in range(4) for s in itertools.combinations(range(3), r)])
  tolerance = 4 * 9 / 32 * np.sqrt(2 / 9 / len(truth))
  for known in (stored["shape"], stored["outline"]):  # text-only, image-only
    scores = {}
    for rule in itertools.product(range(len(subsets)), repeat=3):
      scores[rule] = pooled_f1(subsets[np.asarray(rule)][known], truth)
    best_rule = max(scores, key=scores.get)
    assert abs(scores[best_rule] - mm_shapes.SHAPES_PRESENT_UNIMODAL_F1) < tolerance
    singletons = [[j == s for j in range(3)] for s in range(3)]
    assert [list(subsets[i]) for i in best_rule] == singletons
    predicted = np.eye(3, dtype=bool)[known]
    macro = np.mean([pooled_f1(predicted[:, c], truth[:, c]) for c in range(3)])
    assert abs(macro - mm_shapes.SHAPES_PRESENT_UNIMODAL_F1) < 0.02
  both = np.eye(3, dtype=bool)[stored["shape"]] | np.eye(3, dtype=bool)[stored["outline"]]
  assert pooled_f1(both, truth) == mm_shapes.SHAPES_PRESENT_BAYES_F1
