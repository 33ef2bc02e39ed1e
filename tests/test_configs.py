"""Every config under experiments/configs loads and builds a model that initialises on a batch of
its dataset's shapes (abstractly: no compilation); every fusion is reachable by its config name."""
import glob
import os

import jax
import numpy as np
import pytest

from mmjax.data import interactions, mm_shapes
from mmjax.fusion import FUSIONS
from mmjax.model import model_from_config
from mmjax.train.defaults import load_config

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "experiments", "configs")
CASES = [(os.path.basename(path), None) for path in sorted(glob.glob(f"{CONFIG_DIR}/*.py"))
         if not path.endswith("interactions.py")]
CASES += [("contrastive_probe.py", arg) for arg in ("pretrain,siglip", "probe")]
CASES += [("interactions.py", f"{data_config},{fusion}") for fusion in FUSIONS
          for data_config in ("synergy", "mixed")]


def example_batch(dataset_name):
  dataset, _, builder_config = dataset_name.partition("/")
  if dataset == "mm_shapes":
    example, model_inputs = mm_shapes.make_example(0, 0, 0), mm_shapes.model_inputs
  else:
    example = interactions.make_example(builder_config, 0, 0, 0)
    model_inputs = interactions.model_inputs
  return model_inputs({key: np.stack([np.asarray(value)] * 2) for key, value in example.items()})


@pytest.mark.parametrize("name,arg", CASES, ids=[f"{n}:{a}" if a else n for n, a in CASES])
def test_config_builds_a_model_with_one_output_per_task(name, arg):
  config = load_config(os.path.join(CONFIG_DIR, name), arg)
  batch = example_batch(config.dataset.name)
  model = model_from_config(config.model)
  params = jax.eval_shape(model.init, jax.random.key(0), batch)
  outputs = jax.eval_shape(model.apply, params, batch)
  assert set(outputs) == set(config.tasks)
  for task, output in outputs.items():
    head = config.model.heads[task]
    if head.name == "contrastive":
      assert output["a"].shape == output["b"].shape == (2, head.embed_dim)
    else:
      assert output.shape == (2, head.num_classes)
