"""What every evaluator reads from the run (`Context`), and the two ways they read a split: metric
sums through the driver's eval step (`score`), and per-example outputs gathered from every batch,
device and process onto the host (`gather`)."""
from typing import (Any, Callable, Dict, Hashable, Iterable, Iterator, List, Mapping, NamedTuple,
                    Optional, Tuple)

import jax
import numpy as np

from mmjax import data
from mmjax.train.state import evaluation_params
from mmjax.train.step import evaluate

Batch = Dict[str, np.ndarray]


class Context(NamedTuple):
  """The run an evaluator evaluates: its config, workdir (where an evaluator may write a plot),
  the readers of its splits, its tasks, its driver, the check every batch goes through, and the
  functions `gather` compiled for it (so that an evaluation every N steps compiles once)."""
  config: Any
  workdir: str
  readers: Mapping[str, data.ExampleReader]
  tasks: Mapping[str, Any]
  driver: Any
  batch_check: Any
  compiled: Dict[Hashable, Callable]


def local_batches(context: Context, split: str) -> Iterator[Batch]:
  """This process's rows of every evaluation batch of `split`, in order, each checked (padding
  rows of the last batch have `weight` 0)."""
  config = context.config
  rows = config.eval_batch_size // jax.process_count()
  return context.batch_check.batches(
      data.eval_batches(context.readers[split], config.eval_batch_size,
                        process_index=jax.process_index(), process_count=jax.process_count()),
      lambda i: f"batch {i} of split {split!r}", rows)


def score(context: Context, state: Any, batches: Iterable[Batch]) -> Dict[str, float]:
  """Every task's metrics and the objective's terms over the real examples of `batches` (this
  process's rows of global batches), through the driver's eval step: exact sums over devices and
  processes (`mmjax/train/step.py: evaluate`)."""
  driver = context.driver
  return evaluate(driver.evaluate, state, (driver.put_batch(b) for b in batches), context.tasks)


def primary_metrics(tasks: Mapping[str, Any]) -> List[str]:
  """`<task>/<primary metric>` of every task."""
  return [f"{name}/{task.primary_metric}" for name, task in tasks.items()]


def primary_scorer(context: Context, state: Any) -> Callable[[Iterable[Batch]], Dict[str, float]]:
  """`batches -> {"<task>/<primary metric>": value}` (`score`)."""
  metrics = primary_metrics(context.tasks)
  return lambda batches: {m: v for m, v in score(context, state, batches).items() if m in metrics}


def gather(context: Context, state: Any, split: str,
           outputs: Callable[..., Mapping[str, jax.Array]], static: Tuple[Hashable, ...] = (),
           max_examples: Optional[int] = None) -> Dict[str, np.ndarray]:
  """`{name: (N, ...)}`: `outputs(apply_fn, params, batch, *static)` (per-example arrays; the
  evaluation parameters, the EMA's where kept) of the first `max_examples` real examples (all
  when None) of `split`, with every batch's `weight` == 0 rows left out. Each global batch's
  outputs are gathered from its devices and processes (replicated), so every process holds the
  same arrays, in the split's order of global rows. `outputs` (a module-level function) and
  `static` name the compiled function, compiled once per context."""
  driver = context.driver
  params = evaluation_params(state)
  apply_fn = state.apply_fn
  compute = context.compiled.get((outputs, static))
  if compute is None:
    compute = context.compiled[outputs, static] = jax.jit(
        lambda params, batch: {**outputs(apply_fn, params, batch, *static),
                               "weight": batch["weight"]},
        out_shardings=driver.replicated)
  parts, count = [], 0
  for batch in local_batches(context, split):
    found = jax.device_get(compute(params, driver.put_batch(batch)))
    real = found.pop("weight") > 0
    parts.append({name: np.asarray(value)[real] for name, value in found.items()})
    count += int(real.sum())
    if max_examples is not None and count >= max_examples:
      break
  gathered = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
  return {name: value[:max_examples] for name, value in gathered.items()}
