"""Train state and optimizer from config."""
from typing import Any, Mapping, Tuple

import flax.linen as nn
import jax
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
  """flax's TrainState plus `ema_params`: an exponential moving average of the parameters when
  `config.ema_decay` > 0 (used for evaluation and saved in checkpoints), else None."""
  ema_params: Any = None


def make_optimizer(optimizer_config: Mapping[str, Any],
                   total_steps: int) -> Tuple[optax.GradientTransformation, optax.Schedule]:
  """Adam(W) with linear warm-up then cosine decay to `final_lr_fraction`·lr, after clipping the
  global gradient norm to `grad_clip_norm` (no clipping when it is 0)."""
  learning_rate = optimizer_config["learning_rate"]
  warmup = min(optimizer_config["warmup_steps"], total_steps)
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=learning_rate, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),
      end_value=learning_rate * optimizer_config["final_lr_fraction"])
  clip = optimizer_config["grad_clip_norm"]
  tx = optax.chain(
      optax.clip_by_global_norm(clip) if clip > 0 else optax.identity(),
      optax.adamw(schedule, b1=optimizer_config["b1"], b2=optimizer_config["b2"],
                  eps=optimizer_config["eps"], weight_decay=optimizer_config["weight_decay"]),
  )
  return tx, schedule


def init_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
               example_batch: Mapping[str, Any], ema: bool = False) -> TrainState:
  """Parameters from one example batch, wrapped with the optimizer state (and the EMA's copy)."""
  params = model.init(rng, example_batch)["params"]
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                           ema_params=params if ema else None)


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

