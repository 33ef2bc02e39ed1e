"""Task weighting strategies (`config.task_weighting`, built with `weighting_config(name, ...)`):
how the task losses L_t are combined into the gradient of one train step.

All run inside the one jit-compiled `train_step` (`mmjax/train/step.py`), which gives them the
global mean task losses L (T,) (constants) and, when `per_task_gradients`, each task's gradient
g_t = ∇_θ L_t over the global batch (a vmapped VJP: one forward pass, T backward passes; T
gradient-sized buffers). Learned weighting parameters live in `params['task_weighting']` and are
updated by their own Adam (see `mmjax/train/state.py`); non-learned state (GradNorm's initial
losses, DWA's loss history) lives in `TrainState.weighting_state`, so it is checkpointed and a
resumed run continues exactly. PCGrad and GradNorm act on the task losses' gradients only: the
output regularisers' gradient is added unprojected, like the parameter regularisers'. Parameters
frozen by `config.optimizer.frozen` are left out of every per-task gradient. Each strategy logs `<task>/weight`; strategies that compute
per-task gradients (or any, with `log_task_gradients=True`) also log `<task>/grad_norm` and
`grad_cosine/<a>/<b>` over the shared parameters.

- `fixed`: w_t = `config.tasks.<t>.weight`.
- `uncertainty` (Kendall, Gal, Cipolla 2018, "Multi-task learning using uncertainty to weigh
  losses"): learned s_t = log σ_t², L = Σ_t c_t·w_t·exp(−s_t)·L_t + ½ s_t·[n_t > 0] with c_t = 1
  for a softmax (classification, multi-label, contrastive) likelihood and ½ for a Gaussian
  (regression), their eq. (7) with ½ s_t = log σ_t; s_t starts at 0. The normaliser ½ s_t belongs
  to the likelihood of task t's observed labels, so a step with no labelled example of task t
  (n_t = 0, L_t = 0) has neither term: otherwise, with labels on a fraction p of the steps, s_t
  would settle at 1/(2·p·L_t) (4.4× too large measured at p = 0.25). A noisy task's weight falls:
  at the optimum c_t·w_t·exp(−s_t) = 1 / (2 L_t), whatever the static w_t (1 by default) or p,
  which only shift s_t. The Gaussian factor ½ is kept for `l1` and `huber` regression too
  (derived for squared error; Kendall et al. use it with an L1 loss as well). Evaluation lines
  count the penalty of every task.
- `gradnorm` (Chen et al. 2018, "GradNorm: gradient normalization for adaptive loss balancing"):
  learned weights w_t (starting at the static weights), G_t = ‖∇_W w_t L_t‖ on the shared
  parameters W (`layer`, a regex over parameter paths; the paper picks the last shared layer; empty
  = every shared parameter), r_t = L̃_t / mean(L̃) with L̃_t = L_t / L_t(0) (L_t(0): the first
  step where task t has labelled examples), and the weights descend L_grad = Σ_t |G_t − Ḡ·r_t^α|
  with the target Ḡ·r_t^α held constant; after each update they are renormalised to sum to Σ_t
  (static w_t) (T by default). The network descends Σ_t w_t L_t. α = 1.5 as in most of the
  paper's experiments. A task with no labelled example in a step (its L_t = 0, G_t = 0) takes no
  part in that step's L_grad: Ḡ and mean(L̃) are over the labelled tasks, and L_grad gives its
  weight no gradient (it still moves through the renormalisation and Adam's momentum; counted
  in, its r_t = 0 would lower mean(L̃) and raise the others' targets).
- `pcgrad` (Yu et al. 2020, "Gradient surgery for multi-task learning"): with g_t = w_t ∇L_t on
  the shared parameters, each g_t is projected, for the other tasks j in a random order, onto the
  normal plane of g_j when they conflict (g_t·g_j < 0): g_t ← g_t − (g_t·g_j / ‖g_j‖²) g_j, with
  the original g_j; the update is Σ_t g_t^PC. The orders are drawn from the run's key folded with
  the step, so a resumed run draws the same ones. The heads' gradients are not projected (each
  head has one task's gradient only): the paper projects the shared parameters' gradients.
- `dwa` (Liu, Johns, Davison 2019, "End-to-end multi-task learning with attention"): w_t(k) =
  T·exp(r_t / τ) / Σ_j exp(r_j / τ) with r_t = L̄_t(k−1) / L̄_t(k−2), the mean losses of the two
  previous periods of `period_steps` steps (the paper's epochs), τ = 2; w_t = 1 for the first two
  periods. The static w_t multiplies. L̄_t is the mean over the period's steps where task t had
  labelled examples (as the authors' MTAN code and LibMTL average real losses; a task with none
  in a period keeps its previous L̄_t, and its ratio is 1 until it has two). Periods are steps s
  with the same s // period_steps: a
  skipped non-finite step adds no loss but still ends its period (`skip`), so two periods never
  merge.
- `gradient_blend` (Wang, Tran, Feiszli 2020, "What makes training multi-modal classification
  networks hard?", online Gradient-Blending): the tasks are one classifier on the fused features
  and one per modality on that encoder's features (`unimodal` heads, all on the same label, each
  task counting only the examples that have its `modality`), and
  w_k ∝ ΔG_k / ΔO_k², Σ_k w_k = 1 (the paper's optimal blend, Prop. 1 with its estimates), where
  between two estimates at steps N and N + n (every `period_steps`)

      ΔG_k = L^V_k(N) − L^V_k(N + n)          the gain in held-out loss,
      ΔO_k = O_k(N + n) − O_k(N),  O_k = L^V_k − L^T_k    the growth of the overfitting gap,

  with L^V the task's loss on `heldout_split` (the paper's V, held out from the training data:
  MultiBench's first 8% of the train set, `v_rate = 0.08`) and L^T on the split trained on
  (MultiBench: the whole train set), both measured on the host by the trainer at the period's
  end (`estimate`; the examples of the estimate are the split's real, labelled ones). The weights
  start uniform, 1/K, until the first period ends; the static w_k multiply. Deviations, documented:
  the estimates come from the model's own trajectory (the paper's online G-Blend), not from
  copies trained for `gb_epoch` epochs as MultiBench's `gb_estimate` does; a ΔG ≤ 0 (no
  held-out gain) gives weight 0 and |ΔO| is floored at 1e-4, MultiBench's floor of its O
  (MultiBench's default `delta=False` uses the gap and loss at the end instead, |L^V / O²|);
  when no task gained, the weights stay as they were. The losses are the evaluation parameters'
  (the EMA's, when kept). MultiBench's final fine-tuning of a copy of the fused head is not done.
"""
import dataclasses
import re
from typing import Any, ClassVar, Dict, Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmjax import registry
from mmjax.tasks.objective import is_shared, parameter_path

Array = jax.Array
Grads = Any   # a parameter-shaped pytree; "stacked" ones have a leading task axis


def shared_matrix(stacked: Grads, pattern: str = "") -> Array:
  """`(T, P)`: each task's gradient over the shared parameters whose path matches `pattern`."""
  leaves = [leaf.reshape(leaf.shape[0], -1)
            for path, leaf in jax.tree_util.tree_flatten_with_path(stacked)[0]
            if is_shared(parameter_path(path[:1])) and re.search(pattern, parameter_path(path))]
  return jnp.concatenate(leaves, axis=1)


def gradient_metrics(matrix: Array, names: Sequence[str]) -> Dict[str, Array]:
  """`<task>/grad_norm` and `grad_cosine/<a>/<b>` of per-task gradients `(T, P)`."""
  norms = jnp.linalg.norm(matrix, axis=1)
  cosines = (matrix @ matrix.T) / jnp.maximum(norms[:, None] * norms[None, :], 1e-12)
  metrics = {f"{name}/grad_norm": norms[i] for i, name in enumerate(names)}
  metrics.update({f"grad_cosine/{a}/{b}": cosines[i, j] for i, a in enumerate(names)
                  for j, b in enumerate(names) if i < j})
  return metrics


class Update(NamedTuple):
  """What a strategy returns to the step."""
  model_grads: Grads               # the gradient of the tasks' part of the objective
  weighting_grads: Optional[Any]   # gradient for params['task_weighting'] (None: no parameters)
  state: Any                       # the new weighting state


@dataclasses.dataclass(frozen=True)
class Fixed:
  """L = Σ_t w_t L_t with the configured weights."""
  log_task_gradients: bool = False

  per_task_gradients_always: ClassVar[bool] = False

  @property
  def per_task_gradients(self) -> bool:
    return self.per_task_gradients_always or self.log_task_gradients

  def init_params(self, static: Array) -> Optional[Dict[str, Array]]:
    del static
    return None

  def init_state(self, static: Array) -> Any:
    del static
    return None

  def weights(self, params: Any, state: Any, static: Array, factors: Array) -> Array:
    """The weights w_t of this step (known before the backward pass)."""
    del params, state, factors
    return static

  def penalty(self, params: Any, observed: Optional[Array] = None) -> Optional[Array]:
    """The strategy's own term of the objective (`weighting/penalty`), None when it has none;
    `observed` (T,) bool: which tasks have labelled examples in the step (None: all)."""
    del params, observed
    return None

  def skip(self, state: Any, step: Array) -> Any:
    """The state after step `step` was skipped (non-finite): unchanged, unless the state keeps
    time (DWA's periods)."""
    del step
    return state

  def normalize(self, params: Any, static: Array) -> Any:
    """The learned parameters after an optimizer update (a projection, for some strategies)."""
    del static
    return params

  def update(self, params: Any, state: Any, losses: Array, counts: Array, grads: Grads,
             weights: Array, step: Array, key: Array) -> Update:
    """`losses`, `counts`: each task's mean loss and labelled examples over the global batch;
    `grads`: Σ_t w_t g_t, or the stacked g_t when `per_task_gradients`."""
    del params, losses, counts, step, key
    return Update(_weighted_sum(grads, weights) if self.per_task_gradients else grads, None,
                  state)


def _weighted_sum(stacked: Grads, weights: Array) -> Grads:
  return jax.tree.map(lambda g: jnp.tensordot(weights.astype(g.dtype), g, axes=1), stacked)


@dataclasses.dataclass(frozen=True)
class Uncertainty(Fixed):
  """Homoscedastic uncertainty weighting (Kendall et al. 2018): see the module docstring."""

  def init_params(self, static: Array) -> Dict[str, Array]:
    return {"log_variance": jnp.zeros_like(static)}

  def weights(self, params, state, static, factors):
    del state
    return static * factors * jnp.exp(-params["log_variance"])

  def penalty(self, params, observed=None):
    log_variance = params["log_variance"]
    if observed is not None:   # ½ s_t is the normaliser of task t's observed likelihood only
      log_variance = jnp.where(observed, log_variance, 0.0)
    return 0.5 * jnp.sum(log_variance)

  def update(self, params, state, losses, counts, grads, weights, step, key):
    base = super().update(params, state, losses, counts, grads, weights, step, key)
    # d/ds_t of c_t w_t exp(-s_t) L_t with L_t constant (the penalty's ½ is a parameter term).
    return base._replace(weighting_grads={"log_variance": -weights * losses})


@dataclasses.dataclass(frozen=True)
class GradNorm(Fixed):
  """GradNorm (Chen et al. 2018): see the module docstring."""
  alpha: float = 1.5
  layer: str = ""

  per_task_gradients_always: ClassVar[bool] = True

  def init_params(self, static):
    return {"weights": static}

  def init_state(self, static):
    return {"initial_losses": jnp.zeros_like(static), "seen": jnp.zeros(static.shape, bool)}

  def weights(self, params, state, static, factors):
    del state, static, factors
    return params["weights"]

  def update(self, params, state, losses, counts, grads, weights, step, key):
    del step
    # L_t(0): the loss at the first step where task t has labelled examples.
    observed = counts > 0
    first = observed & ~state["seen"]
    initial = jnp.where(first, losses, state["initial_losses"])
    norms = jnp.linalg.norm(shared_matrix(grads, self.layer), axis=1)   # ‖∇_W L_t‖
    weighted_norms = weights * norms                                      # G_t
    # Only this step's labelled tasks take part: their L(0) is recorded (this step at the latest).
    share = observed / jnp.maximum(jnp.sum(observed), 1)
    relative = jnp.where(observed, losses / jnp.maximum(initial, 1e-12), 0.0)
    mean_relative = jnp.maximum(jnp.sum(share * relative), 1e-12)
    target = jnp.sum(share * weighted_norms) * (relative / mean_relative) ** self.alpha
    return Update(_weighted_sum(grads, weights),
                  {"weights": jnp.where(observed, jnp.sign(weighted_norms - target) * norms, 0.0)},
                  {"initial_losses": initial, "seen": state["seen"] | observed})

  def normalize(self, params: Dict[str, Array], static: Array) -> Dict[str, Array]:
    """Weights kept positive and renormalised to sum to Σ static weights."""
    weights = jnp.maximum(params["weights"], 1e-6)
    return {"weights": weights * jnp.sum(static) / jnp.sum(weights)}


def project_conflicting(matrix: Array, key: Array) -> Array:
  """PCGrad's surgery on per-task gradients `(T, P)`: each row is projected, for the other rows j
  in a random order (one permutation per row, from `key`), onto the normal plane of the original
  row j when they conflict."""
  num_tasks = matrix.shape[0]
  squared_norms = jnp.maximum(jnp.sum(jnp.square(matrix), axis=1), 1e-20)

  def project_row(i, row_key):
    order = jax.random.permutation(row_key, num_tasks)

    def visit(position, g):
      j = order[position]
      dot = jnp.dot(g, matrix[j])
      conflicting = (dot < 0) & (j != i)
      return jnp.where(conflicting, g - dot / squared_norms[j] * matrix[j], g)

    return jax.lax.fori_loop(0, num_tasks, visit, matrix[i])

  return jax.vmap(project_row)(jnp.arange(num_tasks), jax.random.split(key, num_tasks))


@dataclasses.dataclass(frozen=True)
class PCGrad(Fixed):
  """PCGrad (Yu et al. 2020): see the module docstring."""

  per_task_gradients_always: ClassVar[bool] = True

  def update(self, params, state, losses, counts, grads, weights, step, key):
    del params, losses, counts, step
    scaled = jax.tree.map(lambda g: weights.reshape((-1,) + (1,) * (g.ndim - 1)) * g, grads)
    projected = project_conflicting(shared_matrix(scaled), key)
    flat, treedef = jax.tree_util.tree_flatten_with_path(scaled)
    leaves, offset = [], 0
    for path, leaf in flat:
      summed = leaf.sum(axis=0)
      if is_shared(parameter_path(path[:1])):
        size = summed.size
        summed = projected[:, offset:offset + size].sum(axis=0).reshape(summed.shape)
        offset += size
      leaves.append(summed)
    return Update(jax.tree_util.tree_unflatten(treedef, leaves), None, state)


@dataclasses.dataclass(frozen=True)
class DynamicWeightAveraging(Fixed):
  """Dynamic weight averaging (Liu et al. 2019): see the module docstring."""
  temperature: float = 2.0
  period_steps: int = 100

  def init_state(self, static):
    zeros = jnp.zeros_like(static)
    return {"period_sum": zeros, "labelled_steps": zeros, "previous": zeros,
            "before_previous": zeros, "periods": jnp.zeros((), jnp.int32)}

  def weights(self, params, state, static, factors):
    del params, factors
    # 1 until a task has a mean of two periods (one without labels keeps the initial 0).
    ratios = jnp.where(state["before_previous"] > 0,
                       state["previous"] / jnp.maximum(state["before_previous"], 1e-12), 1.0)
    adaptive = static.shape[0] * jax.nn.softmax(ratios / self.temperature)
    return static * jnp.where(state["periods"] >= 2, adaptive, 1.0)

  def _advance(self, state, losses, observed, step):
    """The state after step `step` added `losses` of the `observed` tasks to its period (and
    closed the period if it was its last step)."""
    period_sum = state["period_sum"] + jnp.where(observed, losses, 0.0)
    labelled_steps = state["labelled_steps"] + observed.astype(period_sum.dtype)
    ends = (step + 1) % self.period_steps == 0
    # A task without a labelled step in the period keeps its previous mean (ratio 1 next).
    mean = jnp.where(labelled_steps > 0, period_sum / jnp.maximum(labelled_steps, 1),
                     state["previous"])
    return {
        "period_sum": jnp.where(ends, 0.0, period_sum),
        "labelled_steps": jnp.where(ends, 0.0, labelled_steps),
        "previous": jnp.where(ends, mean, state["previous"]),
        "before_previous": jnp.where(ends, state["previous"], state["before_previous"]),
        "periods": state["periods"] + ends.astype(jnp.int32),
    }

  def update(self, params, state, losses, counts, grads, weights, step, key):
    base = super().update(params, state, losses, counts, grads, weights, step, key)
    return base._replace(state=self._advance(state, losses, counts > 0, step))

  def skip(self, state, step):
    nothing = jnp.zeros_like(state["period_sum"])
    return self._advance(state, nothing, nothing > 0, step)


@dataclasses.dataclass(frozen=True)
class GradientBlending(Fixed):
  """Gradient-Blending (Wang et al. 2020): see the module docstring. Its state holds the
  weights and the losses of the last estimate; the trainer calls `estimate` at step 0 and after
  every `period_steps` steps."""
  period_steps: int = 250
  heldout_split: str = "train[:8%]"

  def init_state(self, static):
    return {"weights": jnp.full_like(static, 1.0 / static.shape[0]),
            "heldout_loss": jnp.zeros_like(static), "train_loss": jnp.zeros_like(static),
            "estimates": jnp.zeros((), jnp.int32)}

  def weights(self, params, state, static, factors):
    del params, factors
    return static * state["weights"]

  def estimate(self, state: Mapping[str, Any], train_loss: Any, heldout_loss: Any) -> Dict[str, Any]:
    """The state (on the host) after an estimate with these per-task losses (T,) (the first:
    only recorded); computed in float64 (ΔO is a difference of differences of nearby losses),
    the losses kept in the state in float32."""
    previous = {k: np.asarray(v, np.float64) for k, v in state.items()}
    train_loss = np.asarray(train_loss, np.float64)
    heldout_loss = np.asarray(heldout_loss, np.float64)
    gain = previous["heldout_loss"] - heldout_loss
    overfit = (heldout_loss - train_loss) - (previous["heldout_loss"] - previous["train_loss"])
    ratios = np.maximum(gain, 0.0) / np.maximum(overfit ** 2, 1e-8)
    update = previous["estimates"] > 0 and ratios.sum() > 0
    weights = ratios / ratios.sum() if update else previous["weights"]
    as_state = lambda x: np.asarray(x, np.float32)
    return {"weights": as_state(weights), "heldout_loss": as_state(heldout_loss),
            "train_loss": as_state(train_loss),
            "estimates": np.asarray(previous["estimates"] + 1, np.int32)}


WEIGHTINGS = {
    "fixed": Fixed,
    "uncertainty": Uncertainty,
    "gradnorm": GradNorm,
    "pcgrad": PCGrad,
    "dwa": DynamicWeightAveraging,
    "gradient_blend": GradientBlending,
}


def weighting_config(name: str = "fixed", **fields: Any) -> ml_collections.ConfigDict:
  """The config spec of weighting strategy `name` with every field."""
  return registry.spec(WEIGHTINGS, name, "task weighting", **fields)


def weighting_from_config(spec: Mapping[str, Any]) -> Fixed:
  strategy = registry.build(WEIGHTINGS, spec, "task weighting")
  if isinstance(strategy, GradNorm) and strategy.alpha < 0:
    raise ValueError(f"config.task_weighting.alpha={strategy.alpha} must be >= 0")
  if (isinstance(strategy, (DynamicWeightAveraging, GradientBlending))
      and strategy.period_steps <= 0):
    raise ValueError(f"config.task_weighting.period_steps={strategy.period_steps} must be "
                     "positive (the steps of one of the paper's epochs)")
  return strategy
