"""The objective's pieces against values worked out by hand: each task kind's loss and metrics,
metric sums that stay exact over uneven padded batches, label masks that remove an example from
everything (gradients included), and regularisers that touch only their own task."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.tasks import kinds
from mmjax.tasks.objective import (objective_sums, parameter_regularizers, task_config,
                                   task_metrics, tasks_from_config)


def tasks(**specs):
  return tasks_from_config({name: task_config(kind, **fields)
                            for name, (kind, fields) in specs.items()})


def sums_of(outputs, batch, task_set):
  return jax.device_get(objective_sums(outputs, batch, task_set))


def test_label_smoothed_cross_entropy_and_confidence_penalty_by_hand():
  z = np.array([[1.0, 2.0, 0.5]])
  task = tasks(t=("classification", dict(label_smoothing=0.3, confidence_penalty=0.2)))
  sums = sums_of({"t": jnp.asarray(z)}, {"t": jnp.array([0])}, task)["t"]
  log_p = z[0] - math.log(np.exp(z[0]).sum())
  q = np.array([0.7 + 0.1, 0.1, 0.1])           # (1 − ε)·onehot + ε/K
  assert sums["loss"] == pytest.approx(-(q * log_p).sum(), rel=1e-6)
  entropy = -(np.exp(log_p) * log_p).sum()
  assert sums["reg"]["confidence_penalty"] == pytest.approx(-0.2 * entropy, rel=1e-6)
  assert sums["stats"]["correct"] == 0.0        # argmax is class 1


def test_multilabel_loss_f1_and_average_precision_by_hand():
  logits = np.array([[2.0, -1.0, 0.0], [-3.0, 1.0, -0.5], [0.5, 0.2, -2.0], [-1.0, -2.0, 3.0]])
  labels = np.array([[1, 0, 0], [0, 1, 1], [0, 1, 0], [1, 0, 1]], np.float32)
  task = tasks(t=("multilabel", {}))
  sums = sums_of({"t": jnp.asarray(logits)}, {"t": jnp.asarray(labels)}, task)
  p = 1 / (1 + np.exp(-logits))
  bce = -(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean(axis=1)
  assert sums["t"]["loss"] == pytest.approx(bce.sum(), rel=1e-6)
  # predicted (σ ≥ 0.5 ⇔ z ≥ 0): [1,0,1], [0,1,0], [1,1,0], [0,0,1]
  # class 0: TP 1 FP 1 FN 1; class 1: TP 2 FP 0 FN 0; class 2: TP 1 FP 1 FN 1
  metrics = task_metrics(sums, task)
  assert metrics["t/micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 2 + 2))
  assert metrics["t/macro_f1"] == pytest.approx((2 / 4 + 1.0 + 2 / 4) / 3)
  # AP by hand, ranking each class's examples by score:
  # class 0: scores 2.0(+), 0.5(−), −1.0(+), −3.0(−): AP = ½(1/1 + 2/3)
  # class 1: 1.0(+), 0.2(+), ...: AP = 1; class 2: 3.0(+), 0.0(−), −0.5(+): AP = ½(1 + 2/3)
  expected = np.mean([0.5 * (1 + 2 / 3), 1.0, 0.5 * (1 + 2 / 3)])
  assert metrics["t/mean_average_precision"] == pytest.approx(expected, rel=1e-6)


def test_average_precision_treats_scores_in_one_bin_as_tied():
  """Two examples whose logits share a bin form one threshold, as tied scores do in
  scikit-learn: precision there counts both (here 1/2), not the better order (1/1); the bound
  allows exactly that move."""
  positives = np.zeros((1, kinds.AP_BINS))
  negatives = np.zeros((1, kinds.AP_BINS))
  positives[0, 700] = negatives[0, 700] = 1
  assert kinds.mean_average_precision(positives, negatives) == pytest.approx(0.5)
  assert kinds.average_precision_error_bound(positives, negatives) == pytest.approx([0.5])


def multilabel_scores(scale, examples=4000, classes=6, seed=0):
  """Multi-hot labels and logits that separate them by `scale` (confident when large)."""
  rng = np.random.default_rng(seed)
  labels = (rng.random((examples, classes)) < 0.3).astype(np.float32)
  logits = scale * (2 * labels - 1) + rng.normal(0, scale, labels.shape)
  return logits.astype(np.float32), labels


@pytest.mark.parametrize("scale", [1.0, 12.0], ids=["moderate", "confident"])
def test_mean_average_precision_matches_scikit_learn_within_its_stated_bound(scale):
  """Bug caught: bins uniform in the probability, where every score ≥ 0.999 shares one bin
  (measured 0.9289 against scikit-learn's 0.9339 for confident logits)."""
  metrics = pytest.importorskip("sklearn.metrics")
  logits, labels = multilabel_scores(scale)
  task = tasks(t=("multilabel", {}))
  sums = sums_of({"t": jnp.asarray(logits)}, {"t": jnp.asarray(labels)}, task)
  found = kinds.average_precisions(sums["t"]["stats"]["positive_scores"],
                                   sums["t"]["stats"]["negative_scores"])
  reference = [metrics.average_precision_score(labels[:, k], logits[:, k])
               for k in range(labels.shape[1])]
  bound = kinds.average_precision_error_bound(sums["t"]["stats"]["positive_scores"],
                                              sums["t"]["stats"]["negative_scores"])
  assert np.all(np.abs(found - reference) <= bound + 1e-12)
  assert np.abs(found - reference).max() < 1e-3 and bound.max() < 1e-2
  assert task_metrics(sums, task)["t/mean_average_precision"] == pytest.approx(
      np.mean(reference), abs=1e-3)


def test_a_class_without_positives_is_left_out_of_the_mean_average_precision():
  """Bug caught: averaging in a class that has no positive example (as AP 0, or any value)."""
  logits, labels = multilabel_scores(1.0, examples=500, classes=3)
  labels[:, 1] = 0.0
  task = tasks(t=("multilabel", {}))
  stats = sums_of({"t": jnp.asarray(logits)}, {"t": jnp.asarray(labels)}, task)["t"]["stats"]
  per_class = kinds.average_precisions(stats["positive_scores"], stats["negative_scores"])
  assert np.isnan(per_class[1]) and np.isfinite(per_class[[0, 2]]).all()
  assert kinds.mean_average_precision(stats["positive_scores"], stats["negative_scores"]) == \
      pytest.approx((per_class[0] + per_class[2]) / 2)


@pytest.mark.parametrize("loss, per_error", [("mse", lambda e: e ** 2), ("l1", np.abs),
                                             ("huber", lambda e: np.where(np.abs(e) <= 1, 0.5 * e ** 2,
                                                                          np.abs(e) - 0.5))])
def test_regression_losses_and_metrics_by_hand(loss, per_error):
  outputs = np.array([[0.5], [-1.0], [2.0], [0.0]])
  targets = np.array([3.0, 1.0, 9.0, 2.5])
  task = tasks(t=("regression", dict(loss=loss, output_offset=2.0, output_scale=3.0)))
  sums = sums_of({"t": jnp.asarray(outputs)}, {"t": jnp.asarray(targets)}, task)
  predictions = 2.0 + 3.0 * outputs[:, 0]
  errors = predictions - targets
  assert sums["t"]["loss"] == pytest.approx(per_error(errors).sum(), rel=1e-6)
  metrics = task_metrics(sums, task)
  assert metrics["t/mae"] == pytest.approx(np.abs(errors).mean(), rel=1e-6)
  assert metrics["t/mse"] == pytest.approx((errors ** 2).mean(), rel=1e-6)
  assert metrics["t/pearson"] == pytest.approx(np.corrcoef(predictions, targets)[0, 1], rel=1e-5)


@pytest.mark.parametrize("delta", [0.5, 2.0])
def test_huber_loss_uses_its_configured_delta(delta):
  """ℓ(e) = ½e² for |e| ≤ δ, δ(|e| − ½δ) beyond. Bug caught: δ = 1 whatever the config."""
  errors = np.array([0.25, -0.8, 1.5, -3.0])
  task = tasks(t=("regression", dict(loss="huber", huber_delta=delta)))
  sums = sums_of({"t": jnp.asarray(errors[:, None])}, {"t": jnp.zeros(4)}, task)
  expected = np.where(np.abs(errors) <= delta, 0.5 * errors ** 2,
                      delta * (np.abs(errors) - 0.5 * delta))
  assert sums["t"]["loss"] == pytest.approx(expected.sum(), rel=1e-6)


def test_pearson_keeps_its_precision_far_from_zero():
  """Targets of mean 1000 and std 1 (a head whose offset is the training mean, 1000.2): r over
  8 batches equals numpy's in float64. Bug caught: uncentred float32 power sums (measured 0.874
  against 0.890)."""
  rng = np.random.default_rng(0)
  targets = 1000.0 + rng.normal(size=4096)
  predictions = targets + rng.normal(size=4096) * 0.5
  task = tasks(t=("regression", dict(output_offset=1000.2)))
  batches = [sums_of({"t": jnp.asarray(p[:, None] - 1000.2, jnp.float32)},
                     {"t": jnp.asarray(y, jnp.float32)}, task)
             for p, y in zip(np.split(predictions, 8), np.split(targets, 8))]
  sums = jax.tree.map(lambda *parts: sum(parts), *batches)
  found = task_metrics(sums, task)["t/pearson"]
  exact = np.corrcoef(predictions, targets)[0, 1]
  assert found == pytest.approx(exact, abs=1e-4)


def _random_batch(rng, size):
  return {"cls": rng.integers(0, 4, size), "ml": (rng.random((size, 5)) < 0.4).astype(np.float32),
          "reg": rng.normal(size=size).astype(np.float32)}


def _random_outputs(rng, size):
  outputs = {"cls": rng.normal(size=(size, 4)), "ml": 2 * rng.normal(size=(size, 5)),
             "reg": rng.normal(size=(size, 1)) + 0.3 * rng.normal(size=(size, 1))}
  return {k: v.astype(np.float32) for k, v in outputs.items()}


ALL_KINDS = dict(cls=("classification", {}), ml=("multilabel", {}), reg=("regression", {}))


def test_metric_sums_over_uneven_padded_batches_equal_the_whole_set():
  """F1, Pearson's r and AP are not means: summing per-batch means would be wrong, summing the
  sufficient statistics is exact, padding included."""
  rng = np.random.default_rng(0)
  task_set = tasks(**ALL_KINDS)
  batch, outputs = _random_batch(rng, 50), _random_outputs(rng, 50)
  whole = task_metrics(sums_of(outputs, batch, task_set), task_set)
  totals = None
  for start, stop in ((0, 7), (7, 30), (30, 50)):
    pad = 32 - (stop - start)
    part = {k: np.concatenate([v[start:stop], v[:pad]]) for k, v in batch.items()}
    part["weight"] = np.r_[np.ones(stop - start), np.zeros(pad)].astype(np.float32)
    out = {k: np.concatenate([v[start:stop], 100 * v[:pad]]) for k, v in outputs.items()}
    found = sums_of(out, part, task_set)
    totals = found if totals is None else jax.tree.map(np.add, totals, found)
  batched = task_metrics(totals, task_set)
  assert set(batched) == set(whole)
  for key in whole:
    assert batched[key] == pytest.approx(whole[key], rel=1e-5, abs=1e-6), key


def test_an_unlabelled_example_adds_nothing_to_loss_metrics_or_gradients():
  """Its label is NaN / out of range: were it read anywhere (even multiplied by 0), the sums or
  the gradient would turn NaN."""
  rng = np.random.default_rng(1)
  task_set = tasks(cls=("classification", dict(confidence_penalty=0.1, output_l2=0.1)),
                   ml=("multilabel", dict(output_l2=0.1)), reg=("regression", dict(output_l2=0.1)))
  batch, outputs = _random_batch(rng, 7), _random_outputs(rng, 7)
  batch["weight"] = np.r_[np.ones(6), 0.0].astype(np.float32)   # row 6: padding, output NaN
  for output in outputs.values():
    output[6] = np.nan
  batch["reg"][2], batch["ml"][2] = np.nan, np.nan
  batch["cls"][2] = 99
  for key in ("cls", "ml", "reg"):
    batch[f"{key}_mask"] = np.arange(7) != 2

  def loss(outs):
    sums = objective_sums(outs, batch, task_set)
    return sum(sums[t]["loss"] + sum(sums[t]["reg"].values()) for t in task_set), sums

  grads, sums = jax.grad(loss, has_aux=True)({k: jnp.asarray(v) for k, v in outputs.items()})
  kept = {k: np.delete(v, [2, 6], axis=0) for k, v in batch.items() if not k.endswith("_mask")}
  expected = sums_of({k: np.delete(v, [2, 6], axis=0) for k, v in outputs.items()}, kept, task_set)
  for name in task_set:   # the example still counts as a real one, for no task
    for found, wanted in zip(jax.tree.leaves(jax.device_get(sums[name])),
                             jax.tree.leaves(expected[name])):
      np.testing.assert_allclose(found, wanted, rtol=1e-6)
  for name, grad in grads.items():
    assert np.all(np.asarray(grad)[2] == 0), name
    assert np.all(np.isfinite(grad[:6])) and np.any(np.asarray(grad) != 0), name
  assert float(sums["cls"]["count"]) == 5 and float(sums["count"]) == 6


def test_a_task_with_a_modality_counts_only_the_examples_that_have_it():
  """A task with `modality` (a unimodal head's) treats an example whose modality is absent, by a
  (B,) presence mask or a (B, T) mask with no real position, as unlabelled; the same task without
  the field counts it (bug caught: the field ignored, so that Gradient-Blending's unimodal heads
  train and are scored on absent inputs)."""
  rng = np.random.default_rng(3)
  batch, outputs = _random_batch(rng, 6), _random_outputs(rng, 6)
  batch["image"], batch["image_mask"] = np.zeros((6, 2, 2, 1)), np.array([1, 0, 1, 1, 1, 0], bool)
  batch["text"] = np.zeros((6, 3), np.int32)
  batch["text_mask"] = np.array([[1, 1, 0]] * 3 + [[0, 0, 0]] + [[1, 0, 0]] * 2, bool)
  batch["cls_mask"] = np.array([1, 1, 1, 1, 0, 1], bool)
  for modality, kept in (("image", [0, 2, 3]), ("text", [0, 1, 2, 5])):
    task = tasks(cls=("classification", dict(modality=modality)))
    found = sums_of(outputs, batch, task)["cls"]
    expected = sums_of({"cls": outputs["cls"][kept]}, {"cls": batch["cls"][kept]},
                       tasks(cls=("classification", {})))["cls"]
    assert found["count"] == len(kept), modality
    np.testing.assert_allclose(found["loss"], expected["loss"], rtol=1e-6)
  assert sums_of(outputs, batch, tasks(cls=("classification", {})))["cls"]["count"] == 5


def test_a_regulariser_on_one_head_moves_only_that_head():
  params = {"heads_a": {"kernel": jnp.ones((3, 2)), "bias": -jnp.ones(2)},
            "heads_b": {"kernel": 2 * jnp.ones((3, 2))},
            "encoders_x": {"kernel": 3 * jnp.ones(4)}, "fusion": {"w": jnp.ones(2)}}
  task_set = tasks(a=("classification", dict(head_l2=0.1, head_l1=0.01)), b=("classification", {}))
  terms = parameter_regularizers(params, task_set)
  assert set(terms) == {"a/reg/head_l2", "a/reg/head_l1"}
  assert float(terms["a/reg/head_l2"]) == pytest.approx(0.1 * 0.5 * 8)
  assert float(terms["a/reg/head_l1"]) == pytest.approx(0.01 * 8)
  grads = jax.grad(lambda p: sum(parameter_regularizers(p, task_set).values()))(params)
  np.testing.assert_allclose(grads["heads_a"]["kernel"], 0.1 * 1 + 0.01)
  np.testing.assert_allclose(grads["heads_a"]["bias"], 0.1 * -1 - 0.01)
  for other in ("heads_b", "encoders_x", "fusion"):
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads[other])), other
  shared = parameter_regularizers(params, task_set, shared_weight_decay=0.5)["reg/shared"]
  assert float(shared) == pytest.approx(0.5 * 0.5 * (4 * 9 + 2))   # encoders and fusion only


@pytest.mark.parametrize("spec, message", [
    (("regression", dict(loss="mae")), "config.tasks.t.loss='mae'; use one of mse, l1, huber"),
    (("regression", dict(confidence_penalty=0.1)), "predicts no distribution"),
    (("contrastive", dict(loss="triplet")), "use one of infonce, siglip"),
    (("classification", dict(label_smoothing=1.0)), r"must lie in \[0, 1\)"),
    (("classification", dict(head_l2=-1.0)), "head_l2=-1.0 must be >= 0"),
])
def test_bad_task_fields_are_one_line_errors(spec, message):
  with pytest.raises(ValueError, match=message):
    tasks(t=spec)


def test_sentiment_metrics_in_both_acc2_conventions_by_hand():
  """Targets 2, −1, 0, 0.4, −2.6, 1; predictions 1.5, 0.2, −0.3, −0.1, −3.4, 2.
  Zero counted as positive: TP 2, FP 1, FN 2 (0, 0.4), TN 1: accuracy 3/6; F1 4/7 (4 positives)
  and 2/5 (2 negatives), weighted (4·4/7 + 2·2/5)/6. Zero excluded: TP 2, FP 1, FN 1, TN 1:
  accuracy 3/5, F1 (3·2/3 + 2·1/2)/5 = 3/5. Seven classes: round(clip) gives 2, 0, −0, −0, −3, 2
  against 2, −1, 0, 0, −3, 1: 4/6."""
  task = tasks(t=("regression", dict(sentiment_metrics=True)))
  predictions = jnp.asarray([[1.5], [0.2], [-0.3], [-0.1], [-3.4], [2.0]])
  targets = jnp.asarray([2.0, -1.0, 0.0, 0.4, -2.6, 1.0])
  metrics = task_metrics(sums_of({"t": predictions}, {"t": targets}, task), task)
  assert metrics["t/acc2_nonneg"] == pytest.approx(0.5)
  assert metrics["t/f1_nonneg"] == pytest.approx((4 * 4 / 7 + 2 * 2 / 5) / 6)
  assert metrics["t/acc2_nonzero"] == pytest.approx(0.6)
  assert metrics["t/f1_nonzero"] == pytest.approx(0.6)
  assert metrics["t/acc7"] == pytest.approx(4 / 6)
