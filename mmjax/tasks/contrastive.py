"""Cross-modal contrastive losses and retrieval counts over the global batch, on one device or per
device under `shard_map`.

Inputs are two modalities' embeddings a, b of shape (B_local, E), L2-normalised by the caller
(not renormalised here), row i of a paired with row i of b. With `axis_name` set, each device
holds rows k·B_local ... (k + 1)·B_local − 1 of the global batch (k its index on the axis); the
other side's embeddings and the weights are gathered from every device with
`lax.all_gather(..., tiled=True)`, so every row is scored against all B global columns and the
positive of local row i is global column k·B_local + i. `weights` (B_local,) in {0, 1} mark
padding rows (weight 0): such a row adds no loss and its column is excluded from every other
row's candidates, so padding changes nothing else.

With s = min(exp(log_scale), 100) for InfoNCE and s = exp(log_scale) for SigLIP:

- InfoNCE / CLIP (van den Oord et al. 2018, "Representation Learning with Contrastive Predictive
  Coding"; Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
  Supervision"): logits z_ij = s·a_i·b_j, row loss
      ℓ_i = ½[−log softmax_j(z_i·)_i − log softmax_j(z_·i)_i],
  the a→b and b→a cross-entropies. CLIP initialises the inverse temperature to 1/0.07
  (`CLIP_LOG_SCALE_INIT`; it has no bias: the head's unused one starts at 0) and clips it "to
  prevent scaling the logits by more than 100";
  open_clip clamps the parameter in place after each optimizer step, here the value is clipped in
  the forward pass: the same logits, but log_scale may drift above log 100 (with zero gradient
  there), so read the scale as min(exp(log_scale), 100), not exp(log_scale).
- SigLIP (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training"): z_ij = s·a_i·b_j + t
  with the learned bias t, labels y_ij = +1 if i = j else −1, row loss
      ℓ_i = −Σ_j log σ(y_ij·z_ij)
  over the real columns j. Initialised as in the paper, log_scale = log 10, t = −10
  (`SIGLIP_LOG_SCALE_INIT`, `SIGLIP_BIAS_INIT`; big_vision's siglip trainer); the paper's
  Algorithm 1 and its code
  (big_vision) do not clip s, nor does this. The paper exchanges b between devices in chunks
  around a ring to save memory; the all_gather here gives the same value.

`initial_log_scale_and_bias(loss)` is the one place that maps a loss to its initialisation: a
`contrastive` head whose `log_scale_init` / `bias_init` are unset takes them from its task's loss
(`mmjax.model.model_from_config`).

Each loss returns Σ_i w_i·ℓ_i over this device's rows; the caller sums over devices and divides
by the global count of real rows (the paper's 1/|B| for SigLIP). The gradient of that global mean
is the one-device gradient on the whole batch: all_gather's transpose (a reduce-scatter) returns
to each device the terms that other devices' rows contribute to its embeddings, and the caller's
psum of the replicated parameters' gradients adds the rest. Everything is computed in float32.
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

Array = jax.Array

CLIP_LOG_SCALE_INIT = math.log(1 / 0.07)
CLIP_MAX_SCALE = 100.0
SIGLIP_LOG_SCALE_INIT = math.log(10.0)
SIGLIP_BIAS_INIT = -10.0
CONTRASTIVE_LOSSES = ("infonce", "siglip")


def initial_log_scale_and_bias(loss: str) -> Tuple[float, float]:
  """The papers' initial (log_scale, bias) of `loss`: CLIP's (log(1/0.07), 0: no bias) for
  InfoNCE, SigLIP's (log 10, −10)."""
  initialisations = {"infonce": (CLIP_LOG_SCALE_INIT, 0.0),
                     "siglip": (SIGLIP_LOG_SCALE_INIT, SIGLIP_BIAS_INIT)}
  if loss not in initialisations:
    raise ValueError(f"unknown contrastive loss {loss!r}; valid contrastive loss names are: "
                     f"{', '.join(CONTRASTIVE_LOSSES)}")
  return initialisations[loss]


# The logit of an excluded (padding) column: exp underflows to 0, while a row whose every column
# is excluded stays finite (and is itself padding, weighted 0).
_EXCLUDED_LOGIT = -1e9


def _gather(x: Array, axis_name: Optional[str]) -> Array:
  """The global batch of `x`: every device's rows in device order (`x` itself on one device)."""
  return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def _positive_columns(local_count: int, axis_name: Optional[str]) -> Array:
  """The global column of each local row's positive, k·B_local + i on device k."""
  offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * local_count
  return offset + jnp.arange(local_count)


def _real_columns(weights: Optional[Array], axis_name: Optional[str]) -> Optional[Array]:
  """(B_global,) bool: which global columns are real examples; None when all are."""
  return None if weights is None else _gather(weights, axis_name) > 0


def _weighted_sum(row_losses: Array, weights: Optional[Array]) -> Array:
  """Σ_i w_i·ℓ_i over local rows (Σ_i ℓ_i without weights)."""
  if weights is not None:
    row_losses = row_losses * weights.astype(jnp.float32)
  return row_losses.sum()


def _cross_entropy_to_positive(logits: Array, positives: Array,
                               real: Optional[Array]) -> Array:
  """−log softmax(logits_i·)[positive_i] per row, over the real columns only."""
  if real is not None:
    logits = jnp.where(real, logits, _EXCLUDED_LOGIT)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(log_probs, positives[:, None], axis=-1)[:, 0]


def infonce_loss(a: Array, b: Array, log_scale: Array, weights: Optional[Array] = None,
                 axis_name: Optional[str] = None) -> Array:
  """Σ_i w_i·½[CE(a_i → global b) + CE(b_i → global a)] over local rows, with logits
  min(exp(log_scale), 100)·a_i·b_j (CLIP's symmetric InfoNCE)."""
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  scale = jnp.minimum(jnp.exp(jnp.asarray(log_scale, jnp.float32)), CLIP_MAX_SCALE)
  positives = _positive_columns(a.shape[0], axis_name)
  real = _real_columns(weights, axis_name)
  a_to_b = _cross_entropy_to_positive(scale * a @ _gather(b, axis_name).T, positives, real)
  b_to_a = _cross_entropy_to_positive(scale * b @ _gather(a, axis_name).T, positives, real)
  return _weighted_sum(0.5 * (a_to_b + b_to_a), weights)


def siglip_loss(a: Array, b: Array, log_scale: Array, bias: Array,
                weights: Optional[Array] = None, axis_name: Optional[str] = None) -> Array:
  """Σ_i w_i·(−Σ_j log σ(y_ij·(exp(log_scale)·a_i·b_j + bias))) over local rows i and global real
  columns j, y_ij = +1 on the positive and −1 elsewhere (SigLIP's pairwise sigmoid loss)."""
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  scale = jnp.exp(jnp.asarray(log_scale, jnp.float32))
  logits = scale * a @ _gather(b, axis_name).T + jnp.asarray(bias, jnp.float32)
  positives = _positive_columns(a.shape[0], axis_name)
  labels = jnp.where(jnp.arange(logits.shape[1]) == positives[:, None], 1.0, -1.0)
  log_likelihoods = jax.nn.log_sigmoid(labels * logits)
  real = _real_columns(weights, axis_name)
  if real is not None:
    log_likelihoods = jnp.where(real, log_likelihoods, 0.0)
  return _weighted_sum(-log_likelihoods.sum(axis=-1), weights)


def _ranks(queries: Array, candidates: Array, positives: Array, real: Optional[Array]) -> Array:
  """Per query row, how many real candidates score strictly higher than its positive."""
  scores = queries @ candidates.T
  positive_scores = jnp.take_along_axis(scores, positives[:, None], axis=-1)
  higher = scores > positive_scores
  if real is not None:
    higher = higher & real
  return higher.sum(axis=-1)


def retrieval_sums(a: Array, b: Array, weights: Optional[Array] = None,
                   axis_name: Optional[str] = None,
                   ks: Sequence[int] = (1, 5, 10)) -> Dict[str, Array]:
  """Recall@k counts over local real rows, among the global batch's real candidates.

  `{"a_to_b/R@k": Σ_i w_i·[rank_i < k], "b_to_a/R@k": ...}` for each k in `ks`, where rank_i is
  the number of real candidates whose similarity to the query is strictly higher than its
  positive's: ties with the positive count in its favour (a hit when strictly fewer than k
  candidates score strictly higher). Divide the counts, summed over devices, by the number of
  real rows for the recall.
  """
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  positives = _positive_columns(a.shape[0], axis_name)
  real = _real_columns(weights, axis_name)
  sums = {}
  for direction, queries, candidates in (("a_to_b", a, b), ("b_to_a", b, a)):
    ranks = _ranks(queries, _gather(candidates, axis_name), positives, real)
    for k in ks:
      sums[f"{direction}/R@{k}"] = _weighted_sum((ranks < k).astype(jnp.float32), weights)
  return sums


def contrastive_loss(name: str, a: Array, b: Array, log_scale: Array, bias: Array,
                     weights: Optional[Array] = None, axis_name: Optional[str] = None) -> Array:
  """The loss `name` (one of `CONTRASTIVE_LOSSES`) summed over local rows; InfoNCE has no bias
  and ignores it."""
  if name == "infonce":
    return infonce_loss(a, b, log_scale, weights, axis_name)
  if name == "siglip":
    return siglip_loss(a, b, log_scale, bias, weights, axis_name)
  raise ValueError(f"unknown contrastive loss {name!r}; valid contrastive loss names are: "
                   f"{', '.join(CONTRASTIVE_LOSSES)}")
