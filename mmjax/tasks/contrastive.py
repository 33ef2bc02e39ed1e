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
  Algorithm 1 and its code (big_vision) do not clip s, nor does this.

`initial_log_scale_and_bias(loss)` is the one place that maps a loss to its initialisation: a
`contrastive` head whose `log_scale_init` / `bias_init` are unset takes them from its task's loss
(`mmjax.model.model_from_config`).

Layouts: how the B × B logits are spread over n devices, each holding b = B/n rows. Every layout
computes the same losses, gradients and retrieval counts (up to float32 summation order; tested on
1 and 8 devices, under both drivers and with 2 processes):

- `full`: each device gathers both sides and forms the whole B × B matrix (the one-device formula),
  keeping its own rows' losses: O(B²) logits per device. The reference.
- `local`: each device scores its own b rows against the B gathered columns (open_clip's
  `--local-loss --gather-with-grad`, which forms the b × B logits of its rows at once; here they
  are formed one device's block of b columns at a time).
- `ring`: nothing is gathered. Each device keeps its rows and the column blocks (the other side's b
  embeddings and their weights) travel around the devices with `lax.ppermute`, n − 1 hops, each
  block scored when it arrives (the SigLIP paper's efficient "chunked" implementation). The
  transpose of a hop is the reverse hop, so the gradients of a block flow back to its device.

In `local` and `ring` each block of b columns is scored in chunks of at most `chunk_size` columns
(0: the whole block) under `jax.checkpoint`, so the logits held at any time are b × min(b, chunk)
and the backward pass recomputes each chunk rather than storing it: O(b·chunk) logits per device,
linear in B at a fixed chunk size (`experiments/bench_contrastive.py` measures it). What the
backward pass keeps is the embeddings a device has seen, B × E (as the all_gather's).
InfoNCE's softmax over chunks is a running log-sum-exp; retrieval ranks are counts, added chunk by
chunk, against the positive's similarity taken from a chunked product of the same shapes.

Each loss returns Σ_i w_i·ℓ_i over this device's rows; the caller sums over devices and divides
by the global count of real rows (the paper's 1/|B| for SigLIP). The gradient of that global mean
is the one-device gradient on the whole batch: the transpose of the all_gather (a reduce-scatter)
or of the ring's hops returns to each device the terms that other devices' rows contribute to its
embeddings, and the caller's psum of the replicated parameters' gradients adds the rest.
Under the per-device driver the step passes `axis_name`. Under the jit driver (`axis_name` None)
the step is traced inside its mesh (`jax.sharding.use_abstract_mesh`, `mmjax/train/parallel.py`):
with more than one device the loss then runs per device under `jax.shard_map` over every mesh axis
(the batch is split over all of them), so a layout holds the same logits under both drivers.
Everything is computed in float32.
"""
import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

Array = jax.Array

CLIP_LOG_SCALE_INIT = math.log(1 / 0.07)
CLIP_MAX_SCALE = 100.0
SIGLIP_LOG_SCALE_INIT = math.log(10.0)
SIGLIP_BIAS_INIT = -10.0
CONTRASTIVE_LOSSES = ("infonce", "siglip")
LAYOUTS = ("full", "local", "ring")
DEFAULT_CHUNK_SIZE = 1024


def initial_log_scale_and_bias(loss: str) -> Tuple[float, float]:
  """The papers' initial (log_scale, bias) of `loss`: CLIP's (log(1/0.07), 0: no bias) for
  InfoNCE, SigLIP's (log 10, −10)."""
  initialisations = {"infonce": (CLIP_LOG_SCALE_INIT, 0.0),
                     "siglip": (SIGLIP_LOG_SCALE_INIT, SIGLIP_BIAS_INIT)}
  if loss not in initialisations:
    raise ValueError(f"unknown contrastive loss {loss!r}; valid contrastive loss names are: "
                     f"{', '.join(CONTRASTIVE_LOSSES)}")
  return initialisations[loss]


def default_layout(loss: str) -> str:
  """The layout a task of `loss` uses unless set: the ring for SigLIP (its paper's), the local
  loss for InfoNCE (open_clip's)."""
  initial_log_scale_and_bias(loss)   # validates the name
  return "ring" if loss == "siglip" else "local"


# The logit of an excluded (padding) column: exp underflows to 0, while a row whose every column
# is excluded stays finite (and is itself padding, weighted 0).
_EXCLUDED_LOGIT = -1e9

# body(accumulators, column chunk (a pytree of (c, E)), its weights (c,), their global indices (c,))
Body = Callable[[Any, Any, Array, Array], Any]


def _gather(x: Array, axis_name: Optional[str]) -> Array:
  """The global batch of `x`: every device's rows in device order (`x` itself on one device)."""
  return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def _positive_columns(local_count: int, axis_name: Optional[str]) -> Array:
  """The global column of each local row's positive, k·B_local + i on device k."""
  offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * local_count
  return offset + jnp.arange(local_count)


def _chunking(width: int, chunk_size: int) -> Tuple[int, int]:
  """(count, size): the fewest chunks of at most `chunk_size` columns (0: one chunk) covering
  `width` columns, of equal size, so that padding is under one column per chunk."""
  if chunk_size <= 0 or chunk_size >= width:
    return 1, width
  count = -(-width // chunk_size)
  return count, -(-width // count)


def _sweep_block(accumulators: Any, body: Body, block: Any, block_weights: Array,
                 first_column: Array, chunk_size: int) -> Any:
  """`body` folded over the columns of one block (a pytree of (w, E) arrays and their weights
  (w,), its first column's global index `first_column`), chunk by chunk; each chunk's
  intermediates are recomputed in the backward pass, not stored. Chunks of equal size cover the
  block; the last is padded with columns of weight 0 and index −1."""
  width = block_weights.shape[0]
  count, size = _chunking(width, chunk_size)
  padding = count * size - width
  split = lambda x, value=0: jnp.pad(x, [(0, padding)] + [(0, 0)] * (x.ndim - 1),
                                     constant_values=value).reshape(count, size, *x.shape[1:])
  # Padding columns have weight 0 and global index −1: no row's positive.
  column_ids = split(first_column + jnp.arange(width), -1)

  def chunk(accumulators, inputs):
    return body(accumulators, *inputs), None

  accumulators, _ = jax.lax.scan(jax.checkpoint(chunk, prevent_cse=False), accumulators,
                                 (jax.tree.map(split, block), split(block_weights), column_ids))
  return accumulators


def _sweep(accumulators: Any, body: Body, columns: Any, weights: Array,
           axis_name: Optional[str], layout: str, chunk_size: int) -> Any:
  """`body` folded over every global column: this device's `columns` (and `weights`) and, with
  `axis_name`, every other device's, gathered (`local`) or passed around the ring (`ring`)."""
  rows = weights.shape[0]
  if axis_name is None:
    return _sweep_block(accumulators, body, columns, weights, jnp.zeros((), jnp.int32),
                        chunk_size)
  devices, index = jax.lax.axis_size(axis_name), jax.lax.axis_index(axis_name)
  if layout == "local":
    blocks = jax.tree.map(lambda x: _gather(x, axis_name).reshape(devices, rows, *x.shape[1:]),
                          (columns, weights))

    def visit(accumulators, inputs):
      origin, (block, block_weights) = inputs
      return _sweep_block(accumulators, body, block, block_weights, origin * rows,
                          chunk_size), None

    accumulators, _ = jax.lax.scan(visit, accumulators, (jnp.arange(devices), blocks))
    return accumulators
  accumulators = _sweep_block(accumulators, body, columns, weights, index * rows, chunk_size)
  forward = [(device, (device + 1) % devices) for device in range(devices)]

  def hop(carry, step):   # after `step` hops this device holds device (index − step)'s block
    accumulators, block = carry
    block = jax.lax.ppermute(block, axis_name, forward)
    origin = (index - step) % devices
    return (_sweep_block(accumulators, body, *block, origin * rows, chunk_size), block), None

  (accumulators, _), _ = jax.lax.scan(hop, (accumulators, (columns, weights)),
                                      jnp.arange(1, devices))
  return accumulators


def _row_totals(make_body: Callable[[Any, Array], Body], initial: Callable[[int], Any],
                rows: Any, columns: Any, weights: Array, axis_name: Optional[str], layout: str,
                chunk_size: int, own_block_only: bool = False) -> Any:
  """Per local row, `make_body(rows, positive columns)` folded over every global column (only
  this device's own columns with `own_block_only`), in `layout`. `full` forms every row against
  every column in one chunk on each device and keeps this device's rows."""
  if layout not in LAYOUTS:
    raise ValueError(f"unknown contrastive layout {layout!r}; valid layouts are: "
                     f"{', '.join(LAYOUTS)}")
  count = weights.shape[0]
  if layout == "full" and axis_name is not None:
    everything = jax.tree.map(lambda x: _gather(x, axis_name), (rows, columns, weights))
    varying = lambda count: jax.lax.pcast(initial(count), axis_name, to="varying")
    totals = _row_totals(make_body, varying, *everything, None, "full", 0, own_block_only)
    first = jax.lax.axis_index(axis_name) * count
    return jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, first, count), totals)
  if layout == "full":
    chunk_size = 0
  accumulators = initial(count)
  if axis_name is not None:   # the carries become device-specific
    accumulators = jax.lax.pcast(accumulators, axis_name, to="varying")
  body = make_body(rows, _positive_columns(count, axis_name))
  if own_block_only:
    first = 0 if axis_name is None else jax.lax.axis_index(axis_name) * count
    return _sweep_block(accumulators, body, columns, weights, jnp.asarray(first, jnp.int32),
                        chunk_size)
  return _sweep(accumulators, body, columns, weights, axis_name, layout, chunk_size)


def _is_positive(positives: Array, column_ids: Array) -> Array:
  """(rows, columns) bool: whether column j (global index column_ids[j]) is row i's positive."""
  return column_ids[None, :] == positives[:, None]


def _real_weights(weights: Optional[Array], rows: Array) -> Array:
  """The rows' weights in float32; ones (varying as the rows do) without weights."""
  return jnp.ones_like(rows[:, 0], jnp.float32) if weights is None else weights.astype(
      jnp.float32)


def _weighted_sum(row_losses: Array, weights: Array) -> Array:
  """Σ_i w_i·ℓ_i over local rows (`weights` from `_real_weights`)."""
  return (row_losses * weights).sum()


def _softmax_body(scale: Array, rows: Array, positives: Array) -> Body:
  """Online log-softmax statistics of logits scale·rows_i·c_j over column chunks:
  (running max m_i, Σ_j exp(z_ij − m_i), the positive's logit z_i,pos), the positive taken from
  the same product as the others, so that −log softmax_i = (m_i − z_i,pos) + log Σ_j exp(z_ij − m_i)
  is as exact as a one-block log_softmax (no cancellation of two large logits)."""
  def body(statistics, columns, column_weights, column_ids):
    running_max, total, positive_logit = statistics
    logits = scale * rows @ columns.T
    positive = _is_positive(positives, column_ids)
    logits = jnp.where((column_weights > 0)[None, :], logits, _EXCLUDED_LOGIT)
    # The shift cancels in the loss; its gradient would be zero up to rounding.
    new_max = jax.lax.stop_gradient(jnp.maximum(running_max, logits.max(axis=-1)))
    total = total * jnp.exp(running_max - new_max) + jnp.exp(
        logits - new_max[:, None]).sum(axis=-1)
    return new_max, total, positive_logit + jnp.where(positive, logits, 0.0).sum(axis=-1)

  return body


def _infonce_rows(a, b, weights, log_scale, axis_name, layout, chunk_size):
  scale = jnp.minimum(jnp.exp(jnp.asarray(log_scale, jnp.float32)), CLIP_MAX_SCALE)

  def make_body(rows, positives):
    to_b, to_a = _softmax_body(scale, rows[0], positives), _softmax_body(scale, rows[1], positives)
    return lambda statistics, columns, weights, column_ids: (
        to_b(statistics[0], columns[0], weights, column_ids),
        to_a(statistics[1], columns[1], weights, column_ids))

  initial = lambda count: ((jnp.full(count, _EXCLUDED_LOGIT), jnp.zeros(count),
                            jnp.zeros(count)),) * 2
  directions = _row_totals(make_body, initial, (a, b), (b, a), weights, axis_name, layout,
                           chunk_size)
  cross_entropy = lambda running_max, total, positive_logit: (
      running_max - positive_logit + jnp.log(total))
  return 0.5 * sum(cross_entropy(*statistics) for statistics in directions)


def _siglip_rows(a, b, weights, log_scale, bias, axis_name, layout, chunk_size):
  scale = jnp.exp(jnp.asarray(log_scale, jnp.float32))
  bias = jnp.asarray(bias, jnp.float32)

  def make_body(rows, positives):
    def body(total, columns, column_weights, column_ids):
      logits = scale * rows @ columns.T + bias
      labels = jnp.where(_is_positive(positives, column_ids), 1.0, -1.0)
      log_likelihoods = jax.nn.log_sigmoid(labels * logits)
      return total - jnp.where(column_weights > 0, log_likelihoods, 0.0).sum(axis=-1)

    return body

  return _row_totals(make_body, lambda count: jnp.zeros(count), a, b, weights, axis_name,
                     layout, chunk_size)


def _per_device(local_sum: Callable[..., Any], sharded: Sequence[Array],
                replicated: Sequence[Array], axis_name: Optional[str]) -> Any:
  """`local_sum(*sharded, *replicated, axis_name)`: this device's sum under a per-device driver
  (or on one device); under jit inside a mesh of several devices, every device's, summed, each
  computed per device under `jax.shard_map` (module docstring)."""
  mesh = jax.sharding.get_abstract_mesh()
  if axis_name is not None or mesh.empty or mesh.size == 1:
    return local_sum(*sharded, *replicated, axis_name)
  axes = mesh.axis_names
  per_device = lambda *args: jax.lax.psum(local_sum(*args, axes), axes)
  return jax.shard_map(per_device, in_specs=(P(axes),) * len(sharded) + (P(),) * len(replicated),
                       out_specs=P())(*sharded, *replicated)


def infonce_loss(a: Array, b: Array, log_scale: Array, weights: Optional[Array] = None,
                 axis_name: Optional[str] = None, layout: str = "local",
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> Array:
  """Σ_i w_i·½[CE(a_i → global b) + CE(b_i → global a)] over local rows, with logits
  min(exp(log_scale), 100)·a_i·b_j (CLIP's symmetric InfoNCE)."""
  local_sum = lambda a, b, weights, log_scale, axis_name: _weighted_sum(
      _infonce_rows(a, b, weights, log_scale, axis_name, layout, chunk_size), weights)
  return _per_device(local_sum, (a.astype(jnp.float32), b.astype(jnp.float32),
                                 _real_weights(weights, a)),
                     (jnp.asarray(log_scale, jnp.float32),), axis_name)


def siglip_loss(a: Array, b: Array, log_scale: Array, bias: Array,
                weights: Optional[Array] = None, axis_name: Optional[str] = None,
                layout: str = "ring", chunk_size: int = DEFAULT_CHUNK_SIZE) -> Array:
  """Σ_i w_i·(−Σ_j log σ(y_ij·(exp(log_scale)·a_i·b_j + bias))) over local rows i and global real
  columns j, y_ij = +1 on the positive and −1 elsewhere (SigLIP's pairwise sigmoid loss)."""
  local_sum = lambda a, b, weights, log_scale, bias, axis_name: _weighted_sum(
      _siglip_rows(a, b, weights, log_scale, bias, axis_name, layout, chunk_size), weights)
  return _per_device(local_sum, (a.astype(jnp.float32), b.astype(jnp.float32),
                                 _real_weights(weights, a)),
                     (jnp.asarray(log_scale, jnp.float32), jnp.asarray(bias, jnp.float32)),
                     axis_name)


def _retrieval_local_sums(a, b, weights, axis_name, layout, chunk_size, ks):
  """This device's R@k counts (see `retrieval_sums`)."""
  def positive_body(rows, positives):
    row_a, row_b = rows

    def body(scores, columns, column_weights, column_ids):
      del column_weights
      column_b, column_a = columns
      positive = _is_positive(positives, column_ids)
      pick = lambda similarities: jnp.where(positive, similarities, 0.0).sum(axis=-1)
      return scores[0] + pick(row_a @ column_b.T), scores[1] + pick(row_b @ column_a.T)

    return body

  def rank_body(rows, positives):
    row_a, row_b, positive_a, positive_b = rows

    def body(ranks, columns, column_weights, column_ids):
      column_b, column_a = columns
      others = (column_weights > 0)[None, :] & ~_is_positive(positives, column_ids)
      higher = lambda similarities, positive: (
          (similarities > positive[:, None]) & others).sum(axis=-1)
      return (ranks[0] + higher(row_a @ column_b.T, positive_a),
              ranks[1] + higher(row_b @ column_a.T, positive_b))

    return body

  zeros = lambda count: (jnp.zeros(count), jnp.zeros(count))
  # The positive's similarity, from a product of the same shapes as the counts', so that an exact
  # tie stays one (tested on the CPU; a backend whose equal-shaped products differed could move a
  # rank by one at an exact tie).
  positive_a, positive_b = _row_totals(positive_body, zeros, (a, b), (b, a), weights, axis_name,
                                       layout, chunk_size, own_block_only=True)
  ranks = _row_totals(rank_body, lambda count: (jnp.zeros(count, jnp.int32),) * 2,
                      (a, b, positive_a, positive_b), (b, a), weights, axis_name, layout,
                      chunk_size)
  sums = {}
  for direction, rank in zip(("a_to_b", "b_to_a"), ranks):
    for k in ks:
      sums[f"{direction}/R@{k}"] = _weighted_sum((rank < k).astype(jnp.float32), weights)
  return sums


def retrieval_sums(a: Array, b: Array, weights: Optional[Array] = None,
                   axis_name: Optional[str] = None, ks: Sequence[int] = (1, 5, 10),
                   layout: str = "local", chunk_size: int = DEFAULT_CHUNK_SIZE
                   ) -> Dict[str, Array]:
  """Recall@k counts over local real rows, among the global batch's real candidates.

  `{"a_to_b/R@k": Σ_i w_i·[rank_i < k], "b_to_a/R@k": ...}` for each k in `ks`, where rank_i is
  the number of real candidates whose similarity to the query is strictly higher than its
  positive's: ties with the positive count in its favour (a hit when strictly fewer than k
  candidates score strictly higher). Divide the counts, summed over devices, by the number of
  real rows for the recall. `layout` and `chunk_size` as the losses' (module docstring).
  """
  local_sums = lambda a, b, real_weights, axis_name: _retrieval_local_sums(
      a, b, real_weights, axis_name, layout, chunk_size, ks)
  return _per_device(local_sums, (a.astype(jnp.float32), b.astype(jnp.float32),
                                  _real_weights(weights, a)), (), axis_name)


def contrastive_loss(name: str, a: Array, b: Array, log_scale: Array, bias: Array,
                     weights: Optional[Array] = None, axis_name: Optional[str] = None,
                     layout: Optional[str] = None,
                     chunk_size: int = DEFAULT_CHUNK_SIZE) -> Array:
  """The loss `name` (one of `CONTRASTIVE_LOSSES`) summed over local rows, in `layout` (None: the
  loss's `default_layout`); InfoNCE has no bias and ignores it."""
  if name not in CONTRASTIVE_LOSSES:
    raise ValueError(f"unknown contrastive loss {name!r}; valid contrastive loss names are: "
                     f"{', '.join(CONTRASTIVE_LOSSES)}")
  layout = layout or default_layout(name)
  if name == "infonce":
    return infonce_loss(a, b, log_scale, weights, axis_name, layout, chunk_size)
  return siglip_loss(a, b, log_scale, bias, weights, axis_name, layout, chunk_size)
