"""Contrastive losses and retrieval counts: values worked out by hand and by plain loops, padding
that changes nothing, and the per-device form on 8 devices against one device.

Tolerance of the 8-device comparison: 1e-5 absolute on the global mean losses (of order 1-5) and
their gradients. Only float32 summation order differs (measured: at most 1.2e-6); a device that
scores its rows against its own block only, or takes the wrong positive, moves them by 0.1 or
more (measured)."""
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.model import encoder_config, fusion_config, head_config, model_from_config
from mmjax.tasks import contrastive, task_config
from mmjax.tasks.contrastive import contrastive_loss, infonce_loss, retrieval_sums, siglip_loss
from mmjax.tasks.objective import tasks_from_config
from mmjax.train import checks, loop
from mmjax.train.defaults import load_config

from config_helpers import REPO
from process_helpers import host_devices_env

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts")
TOLERANCE = 1e-5

# Three real pairs and, last, a padding pair (weight 0) with values that would matter if it counted.
A = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]], np.float32)
B = np.array([[0.8, 0.6], [0.6, -0.8], [0.0, 1.0], [1.0, 0.0]], np.float32)
WEIGHTS = np.array([1.0, 1.0, 1.0, 0.0], np.float32)
LOG_SCALE, BIAS = math.log(3.0), -1.5


def dot(x, y) -> float:
  return sum(float(u) * float(v) for u, v in zip(x, y))


def infonce_by_loops(a, b, scale: float) -> float:
  """Σ_i ½[−log(e^{z_ii} / Σ_j e^{z_ij}) − log(e^{z_ii} / Σ_j e^{z_ji})], z_ij = s·a_i·b_j."""
  n, total = len(a), 0.0
  for i in range(n):
    a_to_b = sum(math.exp(scale * dot(a[i], b[j])) for j in range(n))
    b_to_a = sum(math.exp(scale * dot(a[j], b[i])) for j in range(n))
    positive = math.exp(scale * dot(a[i], b[i]))
    total += 0.5 * (-math.log(positive / a_to_b) - math.log(positive / b_to_a))
  return total


def siglip_by_loops(a, b, scale: float, bias: float) -> float:
  """Σ_i Σ_j log(1 + e^{−y_ij z_ij}), z_ij = s·a_i·b_j + bias, y_ij = ±1 on/off the diagonal."""
  total = 0.0
  for i in range(len(a)):
    for j in range(len(b)):
      label = 1.0 if i == j else -1.0
      total += math.log1p(math.exp(-label * (scale * dot(a[i], b[j]) + bias)))
  return total


def test_infonce_by_hand():
  """a = b = I, s = 1: z = I, each row's two cross-entropies are −log(e / (e + 1))."""
  eye = jnp.eye(2)
  assert infonce_loss(eye, eye, 0.0) == pytest.approx(2 * math.log1p(math.exp(-1)), rel=1e-6)


def test_siglip_by_hand():
  """a = b = I, s = 1, bias = 0: each row has −log σ(1) on the positive, −log σ(−0) = log 2 on
  the negative."""
  eye = jnp.eye(2)
  expected = 2 * (math.log1p(math.exp(-1)) + math.log(2))
  assert siglip_loss(eye, eye, 0.0, 0.0) == pytest.approx(expected, rel=1e-6)


def test_infonce_matches_loops_and_ignores_the_padding_pair():
  expected = infonce_by_loops(A[:3], B[:3], 3.0)
  assert float(infonce_loss(A, B, LOG_SCALE, WEIGHTS)) == pytest.approx(expected, rel=1e-6)
  assert float(infonce_loss(A[:3], B[:3], LOG_SCALE)) == pytest.approx(expected, rel=1e-6)


def test_siglip_matches_loops_and_ignores_the_padding_pair():
  expected = siglip_by_loops(A[:3], B[:3], 3.0, BIAS)
  assert float(siglip_loss(A, B, LOG_SCALE, BIAS, WEIGHTS)) == pytest.approx(expected, rel=1e-6)
  assert float(siglip_loss(A[:3], B[:3], LOG_SCALE, BIAS)) == pytest.approx(expected, rel=1e-6)


def test_unweighted_losses_count_every_row():
  assert float(infonce_loss(A, B, LOG_SCALE)) == pytest.approx(infonce_by_loops(A, B, 3.0),
                                                                rel=1e-6)
  assert float(siglip_loss(A, B, LOG_SCALE, BIAS)) == pytest.approx(
      siglip_by_loops(A, B, 3.0, BIAS), rel=1e-6)


@pytest.mark.parametrize("name", contrastive.CONTRASTIVE_LOSSES)
def test_padding_changes_neither_the_loss_nor_the_gradients_of_real_rows(name):
  """Whatever the padding pair holds, the value and the real rows' gradients are those of the
  three real pairs alone, and the padding rows get no gradient."""
  grad_fn = jax.value_and_grad(
      lambda a, b, log_scale, bias, weights: contrastive_loss(name, a, b, log_scale, bias,
                                                              weights), argnums=(0, 1, 2, 3))
  real_loss, (a_grad, b_grad, scale_grad, bias_grad) = grad_fn(A[:3], B[:3], LOG_SCALE, BIAS,
                                                               WEIGHTS[:3])
  for padding in ([[0.8, 0.6], [1.0, 0.0]], [[-5.0, 3.0], [40.0, 0.0]]):
    a, b = A.copy(), B.copy()
    a[3], b[3] = padding
    loss, (a_pad, b_pad, scale_pad, bias_pad) = grad_fn(a, b, LOG_SCALE, BIAS, WEIGHTS)
    np.testing.assert_allclose(loss, real_loss, rtol=1e-6)
    np.testing.assert_allclose(a_pad[:3], a_grad, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b_pad[:3], b_grad, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(a_pad[3], 0.0)
    np.testing.assert_array_equal(b_pad[3], 0.0)
    np.testing.assert_allclose([scale_pad, bias_pad], [scale_grad, bias_grad], rtol=1e-5,
                               atol=1e-7)


def test_infonce_is_symmetric_in_the_two_modalities():
  a, b = jax.random.normal(jax.random.key(0), (2, 6, 4))
  weights = jnp.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
  np.testing.assert_allclose(infonce_loss(a, b, 1.0, weights), infonce_loss(b, a, 1.0, weights),
                             rtol=1e-6)


def test_an_aligned_batch_has_near_zero_infonce_loss_and_a_shuffled_one_a_large_one():
  """Orthonormal rows, b = a, at the largest scale: the positives win by a margin of 100."""
  a = jnp.linalg.qr(jax.random.normal(jax.random.key(1), (16, 8)))[0].T
  log_scale = math.log(100.0)
  assert float(infonce_loss(a, a, log_scale)) < 1e-6
  assert float(infonce_loss(a, jnp.roll(a, 1, axis=0), log_scale)) / 8 > 90.0


def test_infonce_clips_the_scale_at_100_and_siglip_does_not():
  a, b = jnp.asarray(A[:3]), jnp.asarray(B[:3])
  clipped = infonce_loss(a, b, math.log(100.0))
  assert infonce_loss(a, b, math.log(1000.0)) == clipped
  assert float(clipped) == pytest.approx(infonce_by_loops(A[:3], B[:3], 100.0), rel=1e-5)
  assert float(siglip_loss(a, b, math.log(200.0), BIAS)) == pytest.approx(
      siglip_by_loops(A[:3], B[:3], 200.0, BIAS), rel=1e-5)


def test_paper_initialisations():
  assert math.exp(contrastive.CLIP_LOG_SCALE_INIT) == pytest.approx(1 / 0.07)
  assert math.exp(contrastive.SIGLIP_LOG_SCALE_INIT) == pytest.approx(10.0)
  assert contrastive.SIGLIP_BIAS_INIT == -10.0


@pytest.mark.parametrize("loss, log_scale, bias", [
    ("infonce", math.log(1 / 0.07), 0.0), ("siglip", math.log(10.0), -10.0)])
def test_a_contrastive_head_starts_at_its_task_losss_initialisation(loss, log_scale, bias):
  """Bug caught: a SigLIP task whose head starts at CLIP's temperature (the head's default
  decided apart from the task's loss)."""
  model_config = {"encoders": {m: encoder_config("mlp", hidden_dims=(), dim=4) for m in "ab"},
                  "fusion": fusion_config("concat"),
                  "heads": {"pair": head_config("contrastive", modalities=("a", "b"),
                                                embed_dim=4)}}
  batch = {m: jnp.zeros((2, 3)) for m in "ab"}
  tasks = {"pair": task_config("contrastive", loss=loss)}
  params = model_from_config(model_config, tasks).init(jax.random.key(0), batch)["params"]
  assert float(params["heads_pair"]["log_scale"]) == pytest.approx(log_scale, rel=1e-6)
  assert float(params["heads_pair"]["bias"]) == bias
  # A value the head sets wins over the loss's.
  model_config["heads"]["pair"].log_scale_init = 1.5
  params = model_from_config(model_config, tasks).init(jax.random.key(0), batch)["params"]
  assert float(params["heads_pair"]["log_scale"]) == 1.5
  assert float(params["heads_pair"]["bias"]) == bias
  # Without the task, an unset initialisation is an error, not a silent default.
  model_config["heads"]["pair"].log_scale_init = None
  with pytest.raises(ValueError, match="model_from_config.config.model, config.tasks."):
    model_from_config(model_config).init(jax.random.key(0), batch)


@pytest.mark.parametrize("loss", ["infonce", "siglip"])
def test_the_trainer_builds_the_contrastive_probe_with_its_losss_initialisation(loss):
  config = load_config(os.path.join(REPO, "experiments", "configs", "contrastive_probe.py"),
                       f"pretrain,{loss}")
  model = loop._objective_from_config(config)[0]
  assert (model.heads["contrastive"].log_scale_init, model.heads["contrastive"].bias_init) == \
      contrastive.initial_log_scale_and_bias(loss)


def test_contrastive_loss_dispatches_by_name():
  assert contrastive_loss("infonce", A, B, LOG_SCALE, 123.0, WEIGHTS) == infonce_loss(
      A, B, LOG_SCALE, WEIGHTS)
  assert contrastive_loss("siglip", A, B, LOG_SCALE, BIAS, WEIGHTS) == siglip_loss(
      A, B, LOG_SCALE, BIAS, WEIGHTS)


def test_an_unknown_loss_name_is_one_line():
  with pytest.raises(ValueError) as error:
    contrastive_loss("triplet", A, B, LOG_SCALE, BIAS)
  assert str(error.value) == ("unknown contrastive loss 'triplet'; valid contrastive loss names "
                              "are: infonce, siglip")


# Similarities S[i, j] = a_i·b_j of four real pairs and a padding pair (last row and column): with
# a = I, b = Sᵀ, so a→b queries read the rows of S and b→a queries its columns.
SIMILARITIES = np.array([[3, 3, 1, 0, 9],    # a→b: ties with a candidate; the 9 is padding
                         [2, 1, 2, 0, 9],    # a→b: 2 candidates strictly higher
                         [0, 0, 5, 0, 9],    # a→b: first
                         [1, 1, 1, 0, 9],    # a→b: 3 higher; b→a (column 3): all tie at 0
                         [7, 7, 7, 7, 7]],   # padding query
                        np.float32)
RETRIEVAL_WEIGHTS = np.array([1, 1, 1, 1, 0], np.float32)


def test_retrieval_counts_by_hand_with_ties_and_padding():
  """Ranks (candidates strictly higher than the positive, padding excluded): a→b [0, 2, 0, 3],
  b→a [0, 1, 0, 0]."""
  sums = retrieval_sums(np.eye(5, dtype=np.float32), SIMILARITIES.T, RETRIEVAL_WEIGHTS,
                        ks=(1, 2, 3, 4))
  assert {k: float(v) for k, v in sums.items()} == {
      "a_to_b/R@1": 2.0, "a_to_b/R@2": 2.0, "a_to_b/R@3": 3.0, "a_to_b/R@4": 4.0,
      "b_to_a/R@1": 3.0, "b_to_a/R@2": 4.0, "b_to_a/R@3": 4.0, "b_to_a/R@4": 4.0}


def test_retrieval_keys_default_to_recall_at_1_5_10_in_both_directions():
  sums = retrieval_sums(A, B)
  assert sorted(sums) == sorted(f"{d}/R@{k}" for d in ("a_to_b", "b_to_a") for k in (1, 5, 10))
  # Unweighted, every row counts: with 4 candidates R@5 and R@10 hold every query.
  assert float(sums["a_to_b/R@5"]) == float(sums["b_to_a/R@10"]) == 4.0


def random_pairs(rows=16, dim=6, seed=0):
  """Normalised pairs b ≈ a, rows 3 and 11 padding (their b copy real rows of a)."""
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(rows, dim)).astype(np.float32)
  b = a + 0.7 * rng.normal(size=(rows, dim)).astype(np.float32)
  b[[3, 11]] = a[[0, 5]]
  weights = np.ones(rows, np.float32)
  weights[[3, 11]] = 0.0
  normalise = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  return jnp.asarray(normalise(a)), jnp.asarray(normalise(b)), jnp.asarray(weights)


@pytest.mark.parametrize("chunk_size", [1, 3, 5, 16, 0])
@pytest.mark.parametrize("name", contrastive.CONTRASTIVE_LOSSES)
def test_chunked_losses_and_gradients_equal_the_full_matrix_on_one_device(name, chunk_size):
  """16 columns in chunks of 1, 3 (6 chunks of 3, 2 padding columns), 5 (4 of 4), 16 or whole:
  the loss and its gradients w.r.t. both embeddings, the scale and the bias."""
  a, b, weights = random_pairs()
  loss = lambda layout, size: jax.value_and_grad(
      lambda a, b, s, t: contrastive_loss(name, a, b, s, t, weights, None, layout, size),
      argnums=(0, 1, 2, 3))(a, b, jnp.float32(2.0), jnp.float32(-3.0))
  (full, full_grads), (chunked, chunked_grads) = loss("full", 0), loss("ring", chunk_size)
  assert float(chunked) == pytest.approx(float(full), rel=1e-6)
  for full_grad, chunked_grad in zip(full_grads, chunked_grads):
    np.testing.assert_allclose(chunked_grad, full_grad, rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(full_grads[2])) > 0.1


@pytest.mark.parametrize("chunk_size", [1, 3, 0])
def test_chunked_retrieval_counts_equal_the_full_matrix_and_ties_stay_ties(chunk_size):
  """Random pairs, and a collapsed model (every embedding equal: every candidate ties with the
  positive, which wins each tie, so every query is first) in chunks."""
  a, b, weights = random_pairs()
  full = retrieval_sums(a, b, weights, layout="full")
  assert retrieval_sums(a, b, weights, layout="local", chunk_size=chunk_size) == full
  collapsed = jnp.tile(a[:1], (16, 1))
  sums = retrieval_sums(collapsed, collapsed, weights, layout="ring", chunk_size=chunk_size)
  assert {float(v) for v in sums.values()} == {14.0}


def test_an_unknown_layout_is_one_line():
  with pytest.raises(ValueError, match="unknown contrastive layout 'gather'; valid layouts are: "
                                       "full, local, ring"):
    contrastive_loss("siglip", A, B, LOG_SCALE, BIAS, WEIGHTS, layout="gather")


@pytest.fixture(scope="module")
def eight_device_report():
  result = subprocess.run(
      [sys.executable, os.path.join(SCRIPTS, "contrastive_on_devices.py")], capture_output=True,
      text=True, timeout=300,
      env=host_devices_env(8))
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


RUNS = [f"{form}/{layout}/{chunk_size}" for form in ("per_device", "jit")
        for layout, chunk_size in (("full", 0), ("local", 0), ("local", 2), ("ring", 0),
                                   ("ring", 2))]


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("name", contrastive.CONTRASTIVE_LOSSES)
def test_loss_and_gradients_on_8_devices_in_every_layout_equal_those_of_one_device(
    eight_device_report, name, run):
  """40 rows, 3 of them padding, 5 per device: the global mean loss and its gradients w.r.t. the
  replicated log_scale, bias and embedding projection and w.r.t. each device's embedding rows,
  in each layout, whole blocks or 3 chunks of 2 columns (the last padded with a column that is
  no row's positive), under the pmap driver's per-device
  form and the jit driver's (a (4, 2) mesh), against the one-device full matrix. A ring that
  skips a hop fails (measured: off by 0.11 for InfoNCE, 1.5 for SigLIP), as does a positive
  labelled in every block."""
  report = eight_device_report
  assert report["devices"] == 8
  for key in ("loss", "params_grad", "a_grad", "b_grad"):
    assert report[name][run][f"{key}_diff"] < TOLERANCE, report[name][run]
  for key in ("params_grad", "a_grad", "b_grad"):
    assert report[name][f"{key}_norm"] > 0.1, report[name]


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("case", ["retrieval", "retrieval_ties"])
def test_retrieval_counts_on_8_devices_in_every_layout_equal_those_of_one_device(
    eight_device_report, case, run):
  assert eight_device_report[case][run] == eight_device_report[case]["one"]


def test_a_bad_layout_or_chunk_size_is_named_in_one_line():
  with pytest.raises(ValueError, match=r"config.tasks.pair.layout='gather'; use one of full, "
                                       r"local, ring \(or None: the loss's default\)"):
    tasks_from_config({"pair": task_config("contrastive", layout="gather")})
  with pytest.raises(ValueError, match=r"config.tasks.pair.chunk_size=-1 must be ≥ 0"):
    tasks_from_config({"pair": task_config("contrastive", chunk_size=-1)})


def test_the_default_layouts_are_the_papers():
  assert contrastive.default_layout("siglip") == "ring"
  assert contrastive.default_layout("infonce") == "local"


def test_a_run_resumes_and_evaluates_under_another_layout_or_chunk_size(tmp_path):
  """Layout and chunk size change how the logits are spread, not the numbers: a run stored
  before they existed, or with others, is no other config; its loss still is."""
  config = load_config(os.path.join(REPO, "experiments", "configs", "contrastive_probe.py"))
  workdir = str(tmp_path)
  checks.store_config(workdir, config)
  stored = json.load(open(os.path.join(workdir, checks.CONFIG_FILE)))
  del stored["tasks"]["contrastive"]["layout"], stored["tasks"]["contrastive"]["chunk_size"]
  json.dump(stored, open(os.path.join(workdir, checks.CONFIG_FILE), "w"))
  assert checks.config_changes(workdir, config) == []
  config.tasks.contrastive.layout, config.tasks.contrastive.chunk_size = "full", 7
  assert checks.config_changes(workdir, config) == []
  checks.check_resumable(workdir, config)
  checks.check_resumable(workdir, config, compared=checks.EVALUATED_FIELDS)
  config.tasks.contrastive.loss = "siglip"
  assert checks.config_changes(workdir, config) == [("tasks.contrastive.loss", "infonce",
                                                     "siglip")]
