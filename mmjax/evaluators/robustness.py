"""`robustness`: each task's primary metric on a split with each modality missing, and under each
of its perturbations at every level, with each curve's area (`mmjax/robustness.py` defines the
perturbations, levels and area), and their plot `<evaluator>.png` in the workdir. The split's
batches are held in memory; σ and the means come from this process's rows."""
import dataclasses
import os
from typing import Any, Dict, Mapping, Optional

import jax

from mmjax import robustness
from mmjax.evaluators.context import Context, local_batches, primary_metrics, primary_scorer


@dataclasses.dataclass(frozen=True)
class Robustness:
  split: str = "test"
  every_steps: int = 0   # 0: only at the end of training
  plot: str = "robustness.png"   # in the workdir; "" for none

  def check(self, config: Any, tasks: Dict[str, Any]) -> None:
    del config, tasks

  def splits(self):
    return (self.split,)

  def unselectable(self, metric: str, tasks: Dict[str, Any]) -> Optional[str]:
    del metric, tasks
    return "it reports curves, not a metric to select checkpoints by"

  def run(self, context: Context, state: Any) -> Dict[str, Any]:
    clean = list(local_batches(context, self.split))
    score = primary_scorer(context, state)
    metrics = primary_metrics(context.tasks)
    report: Dict[str, Any] = {"split": self.split, "levels": list(robustness.LEVELS),
                              "clean": score(clean), "missing": {}, "curves": {}, "area": {}}
    for modality in context.config.model.encoders:
      report["missing"][modality] = score([robustness.missing(b, modality) for b in clean])
      stats = robustness.modality_stats(clean, modality)
      kind = robustness.modality_kind(clean[0][modality])
      report["curves"][modality], report["area"][modality] = {}, {}
      for name in robustness.PERTURBATIONS[kind]:
        curve = [score(robustness.perturbed(clean, modality, name, level, context.config.seed,
                                            stats))
                 for level in robustness.LEVELS]
        report["curves"][modality][name] = {m: [point[m] for point in curve] for m in metrics}
        report["area"][modality][name] = {
            m: robustness.area(robustness.LEVELS, report["curves"][modality][name][m])
            for m in metrics}
    if self.plot and jax.process_index() == 0:
      plot_robustness(report, os.path.join(context.workdir, self.plot))
    return report


def plot_robustness(report: Mapping[str, Any], path: str) -> None:
  """One panel per modality: the first task's primary metric against the level, one line per
  perturbation, the modality-missing value dashed."""
  try:
    import matplotlib   # the `bench` extra
  except ImportError:
    print(f"mmjax: matplotlib is not installed (pip install -e '.[bench]'): no {path}")
    return
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  modalities = list(report["curves"])
  metric = robustness.headline_metric(report)
  figure, axes = plt.subplots(1, len(modalities), figsize=(4.5 * len(modalities), 3.5),
                              squeeze=False)
  for axis, modality in zip(axes[0], modalities):
    for name, curve in report["curves"][modality].items():
      axis.plot(report["levels"], curve[metric], marker="o",
                label=f"{name} (area {report['area'][modality][name][metric]:.3f})")
    axis.axhline(report["missing"][modality][metric], linestyle="--", color="grey",
                 label="missing")
    axis.set(title=modality, xlabel="level", ylabel=metric)
    axis.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)
