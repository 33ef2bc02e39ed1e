"""`modality_subsets`: each task's primary metric on a split with only each non-empty subset of the
modalities present (the others absent from every example, as modality dropout makes them absent
in training: `mmjax.modalities.only`), all 2^M − 1 of them, the whole set first; and their plot
`<evaluator>.png` in the workdir. The empty subset is never scored: a model with no input has no
prediction worth a number. The split's batches are held in memory.

A subset's metric is over the split's real examples, as `metrics` counts them: an example whose
data lacks a modality of the subset is scored with what it has of it."""
import dataclasses
import os
from typing import Any, Dict, Mapping, Optional

import jax

from mmjax import modalities
from mmjax.evaluators.context import Context, local_batches, primary_metrics, primary_scorer


@dataclasses.dataclass(frozen=True)
class ModalitySubsets:
  split: str = "test"
  every_steps: int = 0   # 0: only at the end of training
  plot: str = "modality_subsets.png"   # in the workdir; "" for none

  def check(self, config: Any, tasks: Dict[str, Any]) -> None:
    del config, tasks

  def splits(self):
    return (self.split,)

  def unselectable(self, metric: str, tasks: Dict[str, Any]) -> Optional[str]:
    """Selectable by `subsets/<subset>/<task>/<primary metric>`."""
    subset, _, name = metric.removeprefix("subsets/").partition("/")
    if metric.startswith("subsets/") and name in primary_metrics(tasks) and "/" not in subset:
      return None
    return ("its metrics are subsets/<subset>/<task>/<primary metric>, e.g. "
            f"'subsets/<subset>/{primary_metrics(tasks)[0]}'")

  def run(self, context: Context, state: Any) -> Dict[str, Any]:
    names = sorted(context.config.model.encoders)
    batches = list(local_batches(context, self.split))
    score = primary_scorer(context, state)
    report = {"split": self.split, "subsets": {
        modalities.subset_name(subset): score([modalities.only(b, subset, names)
                                               for b in batches])
        for subset in modalities.subsets(names)}}
    if self.plot and jax.process_index() == 0:
      plot_subsets(report, os.path.join(context.workdir, self.plot))
    return report


def plot_subsets(report: Mapping[str, Any], path: str) -> None:
  """One bar per subset and task: its primary metric."""
  try:
    import matplotlib   # the `bench` extra
  except ImportError:
    print(f"mmjax: matplotlib is not installed (pip install -e '.[bench]'): no {path}")
    return
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  subsets = list(report["subsets"])
  metrics = list(report["subsets"][subsets[0]])
  figure, axes = plt.subplots(1, len(metrics), figsize=(1.2 * len(subsets) + 2, 3.5),
                              squeeze=False)
  for axis, metric in zip(axes[0], metrics):
    values = [report["subsets"][s][metric] for s in subsets]
    axis.bar(range(len(subsets)), values, color="tab:blue")
    axis.set_xticks(range(len(subsets)), subsets, rotation=30, ha="right", fontsize=8)
    axis.set(title=f"{report['split']}: modalities present", ylabel=metric)
    for x, value in enumerate(values):
      axis.annotate(f"{value:.3f}", (x, value), ha="center", va="bottom", fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)
