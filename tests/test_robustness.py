"""Robustness perturbations do what their level says, are reproducible, and `mmjax eval
--robustness` writes every modality's curves, areas and plot."""
import json
import os

import numpy as np
import pytest

from mmjax import analysis, evaluate, evaluators, robustness
from mmjax.train import loop

from config_helpers import tiny_config


def token_batch():
  tokens = np.array([[5, 6, 7, 8, 0, 0], [9, 10, 0, 0, 0, 0]], np.int32)
  return {"text": tokens, "text_mask": tokens != 0, "weight": np.ones(2, np.float32)}


def test_word_drop_removes_tokens_and_closes_up_keeping_their_order():
  batch = token_batch()
  rng = np.random.default_rng(0)
  none = robustness.word_drop(batch, "text", 0.0, rng, {})
  np.testing.assert_array_equal(none["text"], batch["text"])
  np.testing.assert_array_equal(none["text_mask"], batch["text_mask"])
  half = robustness.word_drop(batch, "text", 0.5, np.random.default_rng(3), {})
  for row, original in zip(half["text"], batch["text"]):
    kept = row[row != 0]
    assert list(kept) == [t for t in original if t in kept]            # order kept
    assert np.all(row[len(kept):] == 0)                                # closed up
  np.testing.assert_array_equal(half["text_mask"], half["text"] != 0)
  everything = robustness.word_drop(batch, "text", 1.0, rng, {})
  assert not everything["text_mask"].any() and not everything["text"].any()


def test_typos_replace_only_real_tokens_with_ids_from_the_vocabulary():
  batch = token_batch()
  found = robustness.typo(batch, "text", 1.0, np.random.default_rng(0), {"vocabulary": 50})
  real = batch["text_mask"]
  assert np.all(found["text"][~real] == 0)
  assert np.all((found["text"][real] >= 2) & (found["text"][real] < 50))
  np.testing.assert_array_equal(
      robustness.typo(batch, "text", 0.0, np.random.default_rng(0), {"vocabulary": 50})["text"],
      batch["text"])


def test_gaussian_noise_has_the_level_times_the_feature_std():
  values = np.zeros((20000, 2), np.float32)
  noisy = robustness.gaussian_noise({"x": values}, "x", 0.5, np.random.default_rng(0),
                                    {"std": np.array([1.0, 4.0])})["x"]
  np.testing.assert_allclose(noisy.std(axis=0), [0.5, 2.0], rtol=0.03)


def left_padded_sequences(real_fraction=0.35, std=0.4, mean=2.0, steps=40, examples=300):
  """Features `(B, T, 2)` whose last `real_fraction` of steps are real (mean `mean`, std `std`)
  and the rest zero padding, with their `(B, T)` mask and one padding example of large values."""
  rng = np.random.default_rng(0)
  real_steps = int(round(real_fraction * steps))
  mask = np.zeros((examples, steps), bool)
  mask[:, steps - real_steps:] = True
  values = np.where(mask[..., None], rng.normal(mean, std, (examples, steps, 2)), 0.0)
  weight = np.ones(examples, np.float32)
  values[-1], weight[-1] = 50.0, 0.0                                   # a padding example
  return {"x": values.astype(np.float32), "x_mask": mask, "weight": weight}


def test_noise_scale_and_mean_come_from_real_steps_only():
  """Bug caught: σ over every step, padding included (0.59× the stated noise at 35% real
  steps), or over padding examples."""
  batch = left_padded_sequences()
  real = batch["x"][:-1][batch["x_mask"][:-1]]
  stats = robustness.modality_stats([batch], "x")
  np.testing.assert_allclose(stats["std"], real.std(axis=0), rtol=1e-5)
  np.testing.assert_allclose(stats["std"], 0.4, rtol=0.05)
  np.testing.assert_allclose(stats["mean"], 2.0, rtol=0.02)
  noisy = robustness.gaussian_noise(batch, "x", 1.0, np.random.default_rng(1), stats)
  added = (noisy["x"] - batch["x"])
  np.testing.assert_allclose(added[:-1][batch["x_mask"][:-1]].std(axis=0), 0.4, rtol=0.05)
  assert not added[~batch["x_mask"]].any()                             # padding stays padding


def test_a_modality_absent_from_every_example_scales_no_noise():
  batch = left_padded_sequences()
  batch["x_mask"][:] = False
  stats = robustness.modality_stats([batch], "x")
  np.testing.assert_array_equal(stats["std"], [0.0, 0.0])
  noisy = robustness.gaussian_noise(batch, "x", 1.0, np.random.default_rng(0), stats)
  np.testing.assert_array_equal(noisy["x"], batch["x"])
  tokens = {"t": np.zeros((2, 3), np.int32), "t_mask": np.zeros((2, 3), bool)}
  assert robustness.modality_stats([tokens], "t")["vocabulary"] == 3


def test_the_mean_filled_ablation_fills_real_steps_with_their_mean():
  batch = left_padded_sequences()
  mean = robustness.real_values([batch], "x").mean(axis=0)
  np.testing.assert_allclose(mean, 2.0, rtol=0.02)                     # not 0.7 (with padding)
  filled = analysis.mean_filled(batch, "x", mean)["x"]
  real = robustness.real_positions(batch, "x")
  np.testing.assert_allclose(filled[real], np.broadcast_to(mean, (real.sum(), 2)), rtol=1e-6)
  np.testing.assert_array_equal(filled[~real], batch["x"][~real])


def test_blur_keeps_constants_and_the_mean_and_smooths():
  rng = np.random.default_rng(0)
  constant = np.full((1, 8, 8, 1), 3.0, np.float32)
  np.testing.assert_allclose(robustness.blur({"i": constant}, "i", 0.7, rng, {})["i"], 3.0,
                             rtol=1e-6)
  noise = rng.normal(size=(4, 16, 16, 3)).astype(np.float32)
  blurred = robustness.blur({"i": noise}, "i", 0.5, rng, {})["i"]
  assert blurred.std() < 0.6 * noise.std()
  assert abs(blurred.mean() - noise.mean()) < 0.02
  np.testing.assert_array_equal(robustness.blur({"i": noise}, "i", 0.0, rng, {})["i"], noise)


def test_occlusion_covers_a_square_of_the_level_times_the_side():
  images = np.ones((3, 10, 10, 1), np.float32)
  found = robustness.occlusion({"i": images}, "i", 0.4, np.random.default_rng(0),
                               {"mean": 0.0})["i"]
  assert [int((image == 0).sum()) for image in found] == [16, 16, 16]


def test_missing_zeroes_and_masks_the_modality():
  batch = {"image": np.ones((2, 4, 4, 3), np.float32), "text": token_batch()["text"],
           "text_mask": token_batch()["text_mask"]}
  image = robustness.missing(batch, "image")
  assert not image["image"].any() and image["image_mask"].shape == (2,)
  assert not image["image_mask"].any()
  text = robustness.missing(batch, "text")
  assert text["text_mask"].shape == (2, 6) and not text["text_mask"].any()


def test_perturbations_are_reproducible_and_area_is_the_trapezoid_mean():
  batches = [{"x": np.zeros((4, 3), np.float32)} for _ in range(2)]
  stats = {"std": np.ones(3)}
  first = robustness.perturbed(batches, "x", "gaussian_noise", 0.4, 0, stats)
  again = robustness.perturbed(batches, "x", "gaussian_noise", 0.4, 0, stats)
  np.testing.assert_array_equal(first[1]["x"], again[1]["x"])
  assert not np.array_equal(first[0]["x"], first[1]["x"])    # each batch its own draw
  assert robustness.area([0.0, 0.5, 1.0], [1.0, 0.5, 0.0]) == pytest.approx(0.5)
  assert robustness.area([0.0, 0.5, 1.0], [1.0, 1.0, 0.0]) == pytest.approx(0.75)


def test_eval_with_robustness_writes_curves_areas_and_the_plot(data_dir, tmp_path):
  config = tiny_config(data_dir, total_steps=2)
  config.evals = evaluators.metrics_evals(("validation",))
  loop.train_and_evaluate(config, str(tmp_path))
  results = evaluate.evaluate_checkpoint(config, str(tmp_path), robustness=True)
  with open(tmp_path / "eval_results.json") as file:
    written = json.load(file)["robustness"]
  assert written == json.loads(json.dumps(results["robustness"]))
  assert set(written["curves"]) == {"text", "image"}
  assert set(written["curves"]["image"]) == {"gaussian_noise", "blur", "occlusion"}
  assert set(written["curves"]["text"]) == {"word_drop", "typo"}
  for curves in written["curves"].values():
    for curve in curves.values():
      # Level 0 changes nothing.
      assert curve["label/accuracy"][0] == written["clean"]["label/accuracy"]
      assert len(curve["label/accuracy"]) == len(robustness.LEVELS)
  # Dropping every word is the text missing.
  assert (written["curves"]["text"]["word_drop"]["label/accuracy"][-1]
          == written["missing"]["text"]["label/accuracy"])
  assert os.path.getsize(tmp_path / "robustness.png") > 0
