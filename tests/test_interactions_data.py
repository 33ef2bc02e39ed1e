"""The synthetic interactions data: bits recoverable from their own modality only, labels by the
documented rule and noise, the documented Bayes and unimodal (and, for synergy3, bimodal)
accuracies, and rank6's Eckart–Young floors."""
import functools
import itertools

import numpy as np
import pytest

from mmjax import data
from mmjax.data import interactions

CONFIGS = list(interactions.STRUCTURES)
CLASSIFICATION = [c for c in CONFIGS if interactions.STRUCTURES[c].num_classes]


@functools.lru_cache(maxsize=None)
def examples(config, count=3000, split_id=0):
  return tuple(interactions.make_example(config, 0, split_id, i) for i in range(count))


def bits_of(example):
  return {key[len("bits_"):]: value for key, value in example.items() if key.startswith("bits_")}


@pytest.mark.parametrize("config", CONFIGS)
def test_bits_are_read_exactly_from_their_own_modality(config):
  projections = interactions.projections(config, 0)
  assert set(projections) == set(interactions.STRUCTURES[config].modalities)
  for example in examples(config, 200):
    for m, project in projections.items():
      np.testing.assert_array_equal(np.sign(project.T @ example[m]), 2 * example[f"bits_{m}"] - 1)


@pytest.mark.parametrize("config", CLASSIFICATION)
def test_label_agrees_with_the_rule_at_the_bayes_rate(config):
  batch = examples(config)
  rule = np.array([interactions.clean_label(config, bits_of(e)) for e in batch])
  labels = np.array([e["label"] for e in batch])
  bayes = interactions.bayes_accuracy(config)
  assert abs(np.mean(rule == labels) - bayes) < 3 * np.sqrt(bayes * (1 - bayes) / len(batch))


def patterns_of(batch, modalities):
  return np.array([sum(int(e[f"bits_{m}"] @ (2 ** np.arange(4))) << (4 * k)
                       for k, m in enumerate(modalities)) for e in batch])


def best_accuracy_from(config, modalities):
  """The held-out accuracy of the best rule on the bits of `modalities`: the majority label of
  each bit pattern, counted on 6,000 examples of one split, scored on 6,000 of another."""
  fit, held_out = examples(config, 6000, split_id=0), examples(config, 6000, split_id=1)
  labels = np.array([e["label"] for e in fit])
  patterns = patterns_of(fit, modalities)
  rule = {p: np.bincount(labels[patterns == p]).argmax() for p in np.unique(patterns)}
  return np.mean([rule.get(p, 0) == e["label"]
                  for p, e in zip(patterns_of(held_out, modalities), held_out)])


@pytest.mark.parametrize("config,from_a,from_b", [
    ("redundancy", 0.95, 0.95), ("uniqueness", 0.95, 0.5), ("synergy", 0.5, 0.5),
    ("mixed", 0.475, 0.475), ("synergy3", 0.5, 0.5)])
def test_best_unimodal_accuracy_is_as_documented(config, from_a, from_b):
  for modality, documented in (("a", from_a), ("b", from_b)):
    accuracy = best_accuracy_from(config, [modality])
    assert abs(accuracy - documented) < 0.025, (modality, accuracy)


def test_synergy3_label_is_the_xor_of_bit_0_of_each_modality_and_rank6_inputs_are_exact():
  """Written out, not through clean_label (a wrong bit there would pass the rule test)."""
  batch = examples("synergy3", 2000)
  rule = np.array([e["bits_a"][0] ^ e["bits_b"][0] ^ e["bits_c"][0] for e in batch])
  labels = np.array([e["label"] for e in batch])
  assert np.mean(rule == labels) > 0.9
  projections = interactions.projections("rank6", 0)
  for example in examples("rank6", 50):
    for m, project in projections.items():
      np.testing.assert_allclose(project.T @ example[m], 2 * example[f"bits_{m}"] - 1, atol=1e-5)


def test_synergy3_no_two_modalities_predict_the_label():
  """The order-3 claim (the three together reach Bayes: the rule test above)."""
  for pair in itertools.combinations("abc", 2):
    assert abs(best_accuracy_from("synergy3", pair) - 0.5) < 0.025, pair


def rank6_conditional_means():
  """E[y | bits_a, bits_b] over the k used bits of each modality: a (2^k, 2^k) matrix."""
  k = interactions.TARGET_RANK["rank6"]
  patterns = np.array(list(itertools.product((0, 1), repeat=k)))
  padded = lambda p: np.concatenate([p, np.zeros(8 - k, int)])
  return np.array([[interactions.clean_label("rank6", {"a": padded(pa), "b": padded(pb)})
                    for pb in patterns] for pa in patterns])


def test_rank6_target_has_rank_k_with_equal_singular_values_and_the_documented_floors():
  """Eckart–Young on the uniform bit distribution: the singular values of E[y | bits] (scaled to
  the L2 norm of functions, 1/2^k per pattern) are k equal values 1/√k, so the best rank-r
  approximation leaves (k − r)/k of the unit variance unexplained."""
  k = interactions.TARGET_RANK["rank6"]
  means = rank6_conditional_means()
  singular = np.linalg.svd(means / 2 ** k, compute_uv=False)
  np.testing.assert_allclose(singular[:k], 1 / np.sqrt(k), rtol=1e-6)
  np.testing.assert_allclose(singular[k:], 0, atol=1e-9)
  u, s, vt = np.linalg.svd(means)
  for rank in range(k + 2):
    truncated = (u[:, :rank] * s[:rank]) @ vt[:rank]
    residual = np.mean((means - truncated) ** 2)
    expected = interactions.rank_floor_mse("rank6", rank) - interactions.TARGET_NOISE ** 2
    assert residual == pytest.approx(expected, abs=1e-9), rank


def test_rank6_noise_is_gaussian_with_the_documented_sigma():
  batch = examples("rank6", 6000)
  noise = np.array([e["label"] - interactions.clean_label("rank6", bits_of(e)) for e in batch])
  assert abs(noise.mean()) < 4 * interactions.TARGET_NOISE / np.sqrt(len(batch))
  assert noise.std() == pytest.approx(interactions.TARGET_NOISE, rel=0.03)
  clean = np.array([interactions.clean_label("rank6", bits_of(e)) for e in batch])
  assert clean.var() == pytest.approx(1.0, rel=0.05)


def test_builder_generates_a_config_and_names_missing_configs(tmp_path):
  builder = data.prepare("interactions/synergy", str(tmp_path))
  assert builder.info.metadata["bayes_accuracy"] == pytest.approx(0.95)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 8000, "validation": 1000, "test": 2000}
  reader = data.ExampleReader(builder, "test", cache="memory")
  batch = reader.read(np.arange(4))
  assert set(batch) == {"a", "b", "label"}
  assert batch["a"].shape == (4, 8) and batch["label"].dtype == np.int32
  with pytest.raises(ValueError, match="needs a config: use one of interactions/redundancy"):
    data.prepare("interactions", str(tmp_path))
  with pytest.raises(ValueError, match="has no configs"):
    data.prepare("mm_shapes/synergy", str(tmp_path))


def test_builder_of_the_three_modality_and_the_regression_configs(tmp_path):
  batch = data.ExampleReader(data.prepare("interactions/synergy3", str(tmp_path)),
                             "test").read(np.arange(4))
  assert set(batch) == {"a", "b", "c", "label"} and batch["c"].shape == (4, 8)
  builder = data.prepare("interactions/rank6", str(tmp_path))
  assert builder.info.metadata["bayes_mse"] == pytest.approx(interactions.TARGET_NOISE ** 2)
  reader = data.ExampleReader(builder, "test")
  batch = reader.read(np.arange(len(reader)))
  assert batch["a"].shape == (2000, 16) and batch["label"].dtype == np.float32
  expected = [interactions.make_example("rank6", 0, 2, i)["label"] for i in range(2000)]
  np.testing.assert_array_equal(np.sort(batch["label"]), np.sort(expected))
