"""The built-in dataset: each modality carries one attribute, labels follow the documented rule,
the label noise rate matches the documented Bayes accuracy, and the pipeline is step-addressable."""
import os

import numpy as np
import pytest

from mmjax import data
from mmjax.data import mm_shapes


def test_examples_are_a_pure_function_of_seed_split_and_index():
  a, b = mm_shapes.make_example(0, 1, 17), mm_shapes.make_example(0, 1, 17)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a["image"], mm_shapes.make_example(0, 1, 18)["image"])


def test_each_modality_carries_exactly_its_attribute():
  for index in range(300):
    example = mm_shapes.make_example(0, 0, index)
    words = [mm_shapes.VOCABULARY[t] for t in example["text"] if t != mm_shapes.PAD_ID]
    assert [w for w in words if w in mm_shapes.SHAPES] == [mm_shapes.SHAPES[example["shape"]]]
    assert not set(words) & set(mm_shapes.COLOURS)
    # The paint's channel dominates the brightest pixels.
    image = example["image"].astype(np.float32) / 255
    bright = image[image.max(axis=-1) > 0.7]
    assert len(bright) >= 30
    assert np.bincount(bright.argmax(axis=-1), minlength=3).argmax() == example["colour"]


def test_labels_follow_the_rule_except_for_the_documented_noise_rate(mm_shapes_source_labels):
  rule, labels = mm_shapes_source_labels
  agreement = np.mean(rule == labels)
  # P(label == rule) = 1 - ε + ε/K exactly; 3 standard errors on 9,000 examples ≈ 0.009.
  standard_error = np.sqrt(mm_shapes.BAYES_ACCURACY * (1 - mm_shapes.BAYES_ACCURACY) / len(labels))
  assert abs(agreement - mm_shapes.BAYES_ACCURACY) < 3 * standard_error
  assert mm_shapes.BAYES_ACCURACY == pytest.approx(1 - 0.1 + 0.1 / 9)


def test_one_modality_alone_is_right_a_third_of_the_time(mm_shapes_source_labels):
  """The best text-only rule predicts, for shape word s, the majority label among 3s..3s+2;
  it cannot beat the documented unimodal Bayes accuracy."""
  rule, labels = mm_shapes_source_labels
  shape_word = rule // 3
  best = sum(np.bincount(labels[shape_word == s], minlength=9).max() for s in range(3))
  assert best / len(labels) < mm_shapes.UNIMODAL_BAYES_ACCURACY + 0.02


@pytest.fixture(scope="module")
def mm_shapes_source_labels(shapes_builder):
  reader = data.ExampleReader(shapes_builder, "train", cache="memory")
  batch = reader.read(np.arange(len(reader)))
  return 3 * batch["shape"] + batch["colour"], batch["label"]


def test_splits_and_info(shapes_builder):
  info = shapes_builder.info
  assert {k: v.num_examples for k, v in info.splits.items()} == {
      "train": 9000, "validation": 1000, "test": 2000}
  assert info.metadata["bayes_accuracy"] == pytest.approx(mm_shapes.BAYES_ACCURACY)
  assert info.features["label"].num_classes == 9


@pytest.mark.parametrize("cache", ["none", "columns"])
def test_train_batches_resume_at_any_step_with_the_same_batches(shapes_builder, cache):
  """Whatever holds the split (RAM, memory-mapped columns, per-read decoding), the batch at step
  s is the same, in the same row order."""
  cached = data.ExampleReader(shapes_builder, "train", cache="memory")
  other = data.ExampleReader(shapes_builder, "train", cache=cache)
  from_start = data.train_batches(cached, 64, seed=3)
  batches = [next(from_start) for _ in range(145)]  # crosses an epoch boundary (140.6 batches)
  resumed = data.train_batches(other, 64, seed=3, start_step=139)
  for step in range(139, 145):
    got = next(resumed)
    for key in batches[step]:
      np.testing.assert_array_equal(got[key], batches[step][key])


def test_columns_are_written_once_and_reopened(shapes_builder):
  data.ExampleReader(shapes_builder, "validation", cache="columns")
  directory = os.path.join(shapes_builder.data_dir, "columns", "validation")
  files = sorted(os.listdir(directory))
  assert files == sorted(f"{key}.npy" for key in shapes_builder.info.features)
  stamp = os.path.getmtime(os.path.join(directory, "image.npy"))
  reopened = data.ExampleReader(shapes_builder, "validation", cache="columns")
  assert os.path.getmtime(os.path.join(directory, "image.npy")) == stamp
  indices = np.array([999, 3, 500, 3])
  expected = data.ExampleReader(shapes_builder, "validation", cache="none").read(indices)
  for key, value in reopened.read(indices).items():
    np.testing.assert_array_equal(value, expected[key])



def test_every_epoch_visits_each_example_once_and_epochs_differ():
  batch_size, size = 48, 300  # 6.25 batches per epoch: batches span epoch boundaries
  stream = np.concatenate([data.pipeline.train_batch_indices(7, step, batch_size, size)
                           for step in range(25)])  # 4 epochs
  epochs = stream.reshape(4, size)
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(size))
  assert not np.array_equal(epochs[0], epochs[1])


def test_eval_batches_visit_every_example_once_and_weight_padding_zero(shapes_builder):
  reader = data.ExampleReader(shapes_builder, "validation", cache="memory")
  batches = list(data.eval_batches(reader, 300))
  assert [b["image"].shape[0] for b in batches] == [300] * 4
  weights = np.concatenate([b["weight"] for b in batches])
  assert weights.sum() == 1000 and np.all(weights[1000:] == 0)
  images = np.concatenate([b["image"] for b in batches])[:1000]
  np.testing.assert_array_equal(images, reader.read(np.arange(1000))["image"])


def test_unknown_dataset_lists_the_valid_names():
  with pytest.raises(ValueError, match="valid dataset names are: av_mnist, cmu_mosei, cmu_mosi, "
                                       "interactions, mm_imdb, mm_shapes"):
    data.prepare("mnist_typo")


def test_training_batch_order_depends_on_the_seed(shapes_builder):
  """Two seeds give different batches at the same step; one seed gives the same ones."""
  reader = data.ExampleReader(shapes_builder, "train", cache="memory")
  first = lambda seed: next(data.train_batches(reader, 16, seed=seed, start_step=3))
  a, b, again = first(0), first(1), first(0)
  assert not np.array_equal(a["image"], b["image"])
  np.testing.assert_array_equal(a["image"], again["image"])
