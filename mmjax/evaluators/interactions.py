"""`interactions`: does the model use cross-modal interactions? EMAP and per-modality ablation
(`mmjax/analysis.py`) on the first `examples` examples of a split (rounded up to whole eval
batches): `{"split", "emap": accuracy of the model and of its additive projection per
classification task, "ablation": each modality missing or mean-filled, "clean": the primary
metrics}`. One process: the combinations are decoded outside the drivers."""
import dataclasses
import itertools
import math
from typing import Any, Dict, Optional

import jax

from mmjax import analysis
from mmjax.errors import ConfigError
from mmjax.evaluators.context import Context, local_batches, primary_scorer
from mmjax.train.state import evaluation_params


@dataclasses.dataclass(frozen=True)
class Interactions:
  split: str = "test"
  every_steps: int = 0                   # 0: only at the end of training
  examples: int = 2000
  reference_size: Optional[int] = None   # EMAP's reference set (None: all with two modalities,
                                         #   else 100)

  def check(self, config: Any, tasks: Dict[str, Any]) -> None:
    del config, tasks
    if jax.process_count() > 1:
      raise ConfigError("the interactions evaluator (mmjax analyze) runs in one process; run it "
                        "without --distributed, or leave it out of config.evals")
    if self.examples < 1:
      raise ConfigError(f"the interactions evaluator needs examples ≥ 1 (got {self.examples})")

  def splits(self):
    return (self.split,)

  def unselectable(self, metric: str, tasks: Dict[str, Any]) -> Optional[str]:
    del metric, tasks
    return "it reports an analysis, not a metric to select checkpoints by"

  def run(self, context: Context, state: Any) -> Dict[str, Any]:
    config = context.config
    batches = list(itertools.islice(local_batches(context, self.split),
                                    math.ceil(self.examples / config.eval_batch_size)))
    score = primary_scorer(context, state)
    modalities = list(config.model.encoders)
    return {"split": self.split,
            "emap": analysis.emap_report(state.apply_fn, evaluation_params(state), batches,
                                         modalities, context.tasks,
                                         reference_size=self.reference_size, seed=config.seed),
            "ablation": analysis.ablations(score, batches, modalities),
            "clean": score(batches)}
