"""Four tasks of three kinds on the same `mm_shapes` examples, with per-task regularisers and
uncertainty weighting (`mmjax/tasks/weighting.py`):

| task | kind | reads | best possible (mmjax/data/mm_shapes.py) |
|---|---|---|---|
| label | classification, label smoothing 0.1 | both modalities | accuracy 0.911 |
| outline | classification, confidence penalty | image | accuracy 1.0 |
| size | regression (MSE; 25% of labels missing) | image | MSE 0.25, MAE 0.399 (noise floor) |
| shapes_present | multi-label | both modalities | micro/macro F1 1.0 |

The seed model's encoders (LSTM text, conv-pool image) and concatenation are shared; each task
has its own head. `--config.task_weighting=...` accepts any strategy, e.g.
    mmjax train --config experiments/configs/mm_shapes_multitask.py --workdir runs/multitask \
        --config.task_weighting.name=pcgrad
"""
import os

import ml_collections

from mmjax.data import mm_shapes
from mmjax.model import head_config
from mmjax.tasks import task_config, weighting_config
from mmjax.train.defaults import load_config

SIZE_MEAN = sum(mm_shapes.RADIUS_RANGE) / 2                           # 7.75: U(5.5, 10)'s mean
SIZE_STD = (mm_shapes.RADIUS_RANGE[1] - mm_shapes.RADIUS_RANGE[0]) / 12 ** 0.5   # 1.30


def get_config() -> ml_collections.ConfigDict:
  # The seed model (its encoders, fusion, label head and optimizer), loaded by path as a sibling.
  config = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "seed_text_image.py"))
  config.model.heads.outline = head_config("linear", num_classes=len(mm_shapes.SHAPES))
  config.model.heads.size = head_config("mlp", num_classes=1, hidden_dims=(64,))
  config.model.heads.shapes_present = head_config("linear", num_classes=len(mm_shapes.SHAPES))

  config.tasks = ml_collections.ConfigDict()
  config.tasks.label = task_config("classification", label_smoothing=0.1, head_l2=1e-4)
  config.tasks.outline = task_config("classification", confidence_penalty=0.05)
  config.tasks.size = task_config("regression", loss="mse", output_offset=SIZE_MEAN,
                                  output_scale=SIZE_STD, head_l2=1e-4)
  config.tasks.shapes_present = task_config("multilabel", output_l2=1e-3)
  config.task_weighting = weighting_config("uncertainty")
  config.shared_weight_decay = 1e-5

  config.total_steps = 1500
  config.evals.validation.every_steps = 500
  config.checkpoint_every_steps = 500
  config.checkpoint.best_metric = "validation/label/accuracy"
  return config
