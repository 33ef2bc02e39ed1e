"""`pid`: the partial information decomposition (`mmjax/pid.py`, bits) of what the two modalities
say about each classification task, as Liang et al. (NeurIPS 2023) measure datasets and models:

- `dataset`: the PID of the task's labels Y with the two modalities (how much of the label's
  information is redundant, unique to one modality, or synergistic);
- `model`: the PID of the model's predictions (the argmax of its logits) as Y, with the same two
  modality variables: the interactions the model's predictions capture (an additive model
  captures little synergy).

Over those of the first `examples` real examples of `split` that count for the task (its label,
and its modality when it names one: `objective.labelled_weights`; both PIDs on the same examples), each modality is one discrete variable: the k-means cluster
(`clusters` of them, `mmjax.pid.kmeans`) of its encoder features (`features="encoders"`: the
trained encoders') or of its raw float inputs flattened (`features="inputs"`: the data's own,
whatever the model; not for token ids). An example without a modality keeps the features of an
absent one. `{"split", "features", "clusters", "examples": {task: N}, "dataset": {task: terms},
"model": {task: terms}}`, the terms being `mmjax.pid.PID`'s fields. One process: the tables are
built and solved on the host."""
import dataclasses
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import pid
from mmjax.errors import ConfigError
from mmjax.evaluators.context import Context, gather
from mmjax.tasks import kinds
from mmjax.tasks.objective import labelled_weights

FEATURES = ("encoders", "inputs")


def _pid_variables(apply_fn, params, batch, modalities: Sequence[str], features: str,
                   labels: Sequence[Tuple[str, Any]]) -> Dict[str, jax.Array]:
  """Per example: each modality's features `(B, F)` and, for each (name, task) of `labels`, the
  model's prediction, the label and whether the example counts for the task
  (`objective.labelled_weights`)."""
  variables = {"params": params}
  values = (apply_fn(variables, batch, method="encode") if features == "encoders"
            else {m: batch[m].astype(jnp.float32) for m in modalities})
  rows = values[modalities[0]].shape[0]
  found = {f"features/{m}": values[m].reshape(rows, -1) for m in modalities}
  outputs = apply_fn(variables, batch)
  for name, task in labels:
    found[f"prediction/{name}"] = jnp.argmax(outputs[name], axis=-1)
    found[f"label/{name}"] = batch[task.label_key]
    found[f"labelled/{name}"] = labelled_weights(batch, task) > 0
  return found


@dataclasses.dataclass(frozen=True)
class Pid:
  split: str = "test"
  every_steps: int = 0    # 0: only at the end of training
  examples: int = 2000
  clusters: int = 20
  features: str = "encoders"
  seed: int = 0           # of k-means' starts

  def check(self, config: Any, tasks: Dict[str, Any]) -> None:
    if jax.process_count() > 1:
      raise ConfigError("the pid evaluator runs in one process; run it without --distributed, "
                        "or leave it out of config.evals")
    encoders = config.model.encoders
    if len(encoders) != 2:
      raise ConfigError(f"the pid evaluator decomposes what two modalities say about a label; "
                        f"this model has {len(encoders)} ({', '.join(sorted(encoders))})")
    if not any(isinstance(task, kinds.Classification) for task in tasks.values()):
      raise ConfigError("the pid evaluator needs a classification task: its labels and the "
                        "model's predictions are the PID's Y")
    if self.features not in FEATURES:
      raise ConfigError(f"the pid evaluator's features={self.features!r}: use one of {FEATURES}")
    tokens = [m for m, spec in encoders.items() if "vocab_size" in spec]
    if self.features == "inputs" and tokens:
      raise ConfigError(f"the pid evaluator's features='inputs' would cluster {tokens[0]!r}'s "
                        "token ids; use features='encoders'")
    if not 2 <= self.clusters <= self.examples:
      raise ConfigError(f"the pid evaluator needs 2 ≤ clusters ≤ examples (got clusters="
                        f"{self.clusters}, examples={self.examples})")

  def splits(self):
    return (self.split,)

  def unselectable(self, metric: str, tasks: Dict[str, Any]) -> Optional[str]:
    del metric, tasks
    return "it reports an analysis, not a metric to select checkpoints by"

  def run(self, context: Context, state: Any) -> Dict[str, Any]:
    modalities = tuple(context.config.model.encoders)
    labels = tuple((name, task) for name, task in context.tasks.items()
                   if isinstance(task, kinds.Classification))
    found = gather(context, state, self.split, _pid_variables,
                   (modalities, self.features, labels), max_examples=self.examples)
    ids = [pid.kmeans(found[f"features/{m}"], self.clusters, self.seed + i)[1]
           for i, m in enumerate(modalities)]
    report = {"split": self.split, "features": self.features, "clusters": self.clusters,
              "examples": {}, "dataset": {}, "model": {}}
    for task, _ in labels:
      rows = np.asarray(found[f"labelled/{task}"], bool)
      report["examples"][task] = int(rows.sum())
      if not rows.any():
        continue
      for key, y in (("dataset", found[f"label/{task}"]), ("model", found[f"prediction/{task}"])):
        report[key][task] = pid.pid(pid.joint_table(ids[0][rows], ids[1][rows],
                                                    np.asarray(y)[rows])).as_dict()
    return report
