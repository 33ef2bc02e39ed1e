"""Train state and optimizer from config."""
import re
from typing import Any, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from mmjax.tasks.objective import parameter_path


class TrainState(train_state.TrainState):
  """flax's TrainState plus `ema_params`: an exponential moving average of the parameters when
  `config.ema_decay` > 0 (used for evaluation and saved in checkpoints), else None; and
  `weighting_state`: the task weighting's non-learned state (`mmjax/tasks/weighting.py`), if any.
  The weighting's learned parameters are `params['task_weighting']`. `skipped_steps`: how many
  steps had a non-finite loss or gradient and so changed nothing (`mmjax/train/step.py`)."""
  ema_params: Any = None
  weighting_state: Any = None
  skipped_steps: Any = None


def evaluation_params(state: TrainState) -> Any:
  """The parameters evaluation, analysis, prediction and export use: the EMA's where kept."""
  return state.params if state.ema_params is None else state.ema_params


def parameter_labels(params: Any, frozen: str = "") -> Any:
  """Each parameter's optimizer: 'task_weighting' for the weighting's own parameters, 'frozen'
  for those whose path ('encoders_text/lstm_0/...') matches the regex `frozen` (never 'heads_'
  ones unless named), 'model' for the rest."""
  def label(path, _):
    if parameter_path(path[:1]) == "task_weighting":
      return "task_weighting"
    name = parameter_path(path)
    return "frozen" if frozen and re.search(frozen, name) else "model"
  return jax.tree_util.tree_map_with_path(label, params)


WEIGHT_DECAY_MASKS = ("matrices", "all")


def decays(path: str, parameter: Any, mask: str = "matrices") -> bool:
  """Whether AdamW's decoupled weight decay shrinks the parameter at `path`. `matrices` (the
  default) is open_clip's rule: every parameter of two or more dimensions (kernels, embedding
  tables) but none of fewer (biases, LayerNorm scales, the contrastive log-scale and bias), none
  named `bias`, and no class or distillation token (`cls` in its name or a `_token` suffix:
  ViT's and AST's are (1, 1, D), open_clip's (D,)); the pretrained towers' names follow the same
  rule (their LayerNorm scales and biases are 1-D, CLIP's class embedding is 1-D);
  `all` decays every parameter (optax's and torch's AdamW, as MultiBench trains)."""
  if mask == "all":
    return True
  name = path.rsplit("/", 1)[-1]
  return (jnp.ndim(parameter) >= 2 and "bias" not in name and "cls" not in name
          and not name.endswith("_token"))


def scale_by_path(scales: Mapping[str, Any], zero_gradients: bool) -> optax.GradientTransformation:
  """Multiplies the update of each parameter whose path `scales` names by its scale (arrays
  broadcast against the parameter); with `zero_gradients`, instead zeroes the gradient where
  the scale is 0 (`mmjax/train/finetune.py`)."""
  def update(updates, state, params=None):
    del params
    def apply(path, u):
      scale = scales.get(parameter_path(path))
      if scale is None:
        return u
      scale = jnp.asarray(scale, u.dtype)
      return jnp.where(scale > 0, u, 0) if zero_gradients else u * scale
    return jax.tree_util.tree_map_with_path(apply, updates), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(optimizer_config: Mapping[str, Any], total_steps: int,
                   learning_rate_scales: Optional[Mapping[str, Any]] = None
                   ) -> Tuple[optax.GradientTransformation, optax.Schedule]:
  """Adam(W) with linear warm-up then cosine decay to `final_lr_fraction`·lr, after clipping the
  global gradient norm to `grad_clip_norm` (no clipping when it is 0), for the model's
  parameters, the weight decay on the parameters `weight_decay_mask` names (`decays`);
  parameters matching the regex `frozen` are never updated (a linear probe); the task
  weighting's learned parameters get plain Adam on the same schedule, outside the clipping and
  the weight decay. `learning_rate_scales` (`{path: scale}`, `finetune.learning_rate_scales`)
  scale the updates of the parameters they name; a scale of 0 also zeroes their gradients
  before clipping (a locked layer)."""
  learning_rate = optimizer_config["learning_rate"]
  warmup = min(optimizer_config["warmup_steps"], total_steps)
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=learning_rate, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),
      end_value=learning_rate * optimizer_config["final_lr_fraction"])
  clip = optimizer_config["grad_clip_norm"]
  mask = optimizer_config.get("weight_decay_mask", "matrices")
  if mask not in WEIGHT_DECAY_MASKS:
    raise ValueError(f"config.optimizer.weight_decay_mask={mask!r}; use one of "
                     f"{', '.join(WEIGHT_DECAY_MASKS)}")
  decay_mask = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, parameter: decays(parameter_path(path), parameter, mask), params)
  scales = learning_rate_scales or {}
  model = optax.chain(
      scale_by_path(scales, zero_gradients=True) if scales else optax.identity(),
      optax.clip_by_global_norm(clip) if clip > 0 else optax.identity(),
      optax.adamw(schedule, b1=optimizer_config["b1"], b2=optimizer_config["b2"],
                  eps=optimizer_config["eps"], weight_decay=optimizer_config["weight_decay"],
                  mask=decay_mask),
      scale_by_path(scales, zero_gradients=False) if scales else optax.identity(),
  )
  transforms = {"model": model, "frozen": optax.set_to_zero(),
                "task_weighting": optax.adam(schedule, b1=optimizer_config["b1"],
                                             b2=optimizer_config["b2"], eps=optimizer_config["eps"])}
  frozen = optimizer_config.get("frozen") or ""
  tx = optax.multi_transform(transforms, lambda params: parameter_labels(params, frozen))
  return tx, schedule


def init_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
               example_batch: Mapping[str, Any], ema: bool = False,
               weighting_params: Any = None, weighting_state: Any = None) -> TrainState:
  """Parameters from one example batch (plus the task weighting's learned parameters, if any),
  wrapped with the optimizer state (and the EMA's copy)."""
  params = dict(model.init(rng, example_batch)["params"])
  if weighting_params is not None:
    params["task_weighting"] = weighting_params
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                           ema_params=params if ema else None, weighting_state=weighting_state,
                           skipped_steps=jnp.zeros((), jnp.int32))


def state_initializer(model: nn.Module, tx: optax.GradientTransformation, ema: bool = False):
  """A jit-compiled `(rng, example_batch) -> TrainState`: build it once, call it once per seed."""
  return jax.jit(lambda rng, example_batch: init_state(model, tx, rng, example_batch, ema))


def create_train_state(model: nn.Module, tx: optax.GradientTransformation,
                       example_batch: Mapping[str, Any], rng: jax.Array,
                       ema: bool = False) -> TrainState:
  """Initialises parameters from one example batch and wraps them with the optimizer state."""
  return state_initializer(model, tx, ema)(rng, example_batch)


def parameter_count(params: Any) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))

