"""The synthetic interactions data: bits recoverable from their own modality only, labels by the
documented rule and noise, and the documented Bayes and unimodal accuracies."""
import numpy as np
import pytest

from mmjax import data
from mmjax.data import interactions

CONFIGS = list(interactions.NUM_CLASSES)


def examples(config, count=3000):
  return [interactions.make_example(config, 0, 0, i) for i in range(count)]


@pytest.mark.parametrize("config", CONFIGS)
def test_bits_are_read_exactly_from_their_own_modality(config):
  project_a, project_b = interactions._projections(0)
  for example in examples(config, 200):
    np.testing.assert_array_equal(np.sign(project_a.T @ example["a"]), 2 * example["bits_a"] - 1)
    np.testing.assert_array_equal(np.sign(project_b.T @ example["b"]), 2 * example["bits_b"] - 1)


@pytest.mark.parametrize("config", CONFIGS)
def test_label_agrees_with_the_rule_at_the_bayes_rate(config):
  batch = examples(config)
  rule = np.array([interactions.clean_label(config, e["bits_a"], e["bits_b"]) for e in batch])
  labels = np.array([e["label"] for e in batch])
  bayes = interactions.bayes_accuracy(config)
  assert abs(np.mean(rule == labels) - bayes) < 3 * np.sqrt(bayes * (1 - bayes) / len(batch))


@pytest.mark.parametrize("config,from_a,from_b", [
    ("redundancy", 0.95, 0.95), ("uniqueness", 0.95, 0.5), ("synergy", 0.5, 0.5),
    ("mixed", 0.475, 0.475)])
def test_best_unimodal_accuracy_is_as_documented(config, from_a, from_b):
  """The best rule from one modality's bits predicts the majority label for each bit pattern."""
  batch = examples(config, 6000)
  labels = np.array([e["label"] for e in batch])
  for key, documented in (("bits_a", from_a), ("bits_b", from_b)):
    patterns = np.array([e[key] @ (2 ** np.arange(4)) for e in batch])
    correct = sum(np.bincount(labels[patterns == p]).max() for p in np.unique(patterns))
    assert abs(correct / len(batch) - documented) < 0.025, (key, correct / len(batch))


def test_builder_generates_a_config_and_names_missing_configs(tmp_path):
  builder = data.prepare("interactions/synergy", str(tmp_path))
  assert builder.info.metadata["bayes_accuracy"] == pytest.approx(0.95)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 8000, "validation": 1000, "test": 2000}
  reader = data.ExampleReader(builder, "test", cache="memory")
  batch = reader.read(np.arange(4))
  assert batch["a"].shape == (4, 8) and batch["label"].dtype == np.int32
  with pytest.raises(ValueError, match="needs a config: use one of interactions/redundancy"):
    data.prepare("interactions", str(tmp_path))
  with pytest.raises(ValueError, match="has no configs"):
    data.prepare("mm_shapes/synergy", str(tmp_path))
