"""Modality balancing: methods that keep one modality from dominating the training of a fused
model (modality imbalance: Wang et al., CVPR 2020; Peng et al., CVPR 2022). `config.balancing`
names one (`balancing_config(name, **fields)`), run inside the one train step on every driver:

    none      nothing (the default)
    ogm_ge    OGM-GE: the dominant modality's encoder gradient damped by its score ratio, plus
              noise of the gradient's scale (`mmjax/balancing/ogm_ge.py`)

A method with `needs_unimodal` receives, from the step's forward pass, the outputs of the model
with each modality alone (`MultimodalModel.with_unimodal`), reduces them to sums over the batch
(`sums`: exact over micro-batches and devices) and turns those into a change of the gradients
(`modulate`). To add a method: one file here, and one entry below.
"""
import dataclasses
from typing import Any, ClassVar, Mapping, Optional, Sequence

import ml_collections

from mmjax import registry
from mmjax.balancing.ogm_ge import OGMGE


@dataclasses.dataclass(frozen=True)
class NoBalancing:
  needs_unimodal: ClassVar[bool] = False

  def resolved(self, tasks, modalities, total_steps) -> "NoBalancing":
    del tasks, modalities, total_steps
    return self


BALANCERS = {"none": NoBalancing, "ogm_ge": OGMGE}


def balancing_config(name: str = "none", **fields: Any) -> ml_collections.ConfigDict:
  """The config spec of balancing method `name` with every field."""
  return registry.spec(BALANCERS, name, "balancing method", **fields)


def balancing_from_config(spec: Optional[Mapping[str, Any]], tasks: Mapping[str, Any],
                          modalities: Sequence[str], total_steps: int) -> Any:
  """The method of `config.balancing`, resolved for the run (its task, its window); ValueError
  naming the field for what cannot work."""
  method = registry.build(BALANCERS, spec or {"name": "none"}, "balancing method")
  return method.resolved(tasks, list(modalities), total_steps)
