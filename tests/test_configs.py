"""Every config under experiments/configs loads and builds a model that initialises on a batch of
its dataset's shapes (abstractly: no compilation)."""
import glob
import importlib.util
import os

import jax
import numpy as np
import pytest

from mmjax.data import mm_shapes
from mmjax.model import model_from_config

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                        "experiments", "configs", "*.py")))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_builds_a_model_with_one_output_per_task(path):
  spec = importlib.util.spec_from_file_location("config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  assert config.dataset.name == "mm_shapes"
  batch = mm_shapes.model_inputs({key: np.stack([value] * 2) for key, value in
                                  mm_shapes.make_example(0, 0, 0).items()})
  model = model_from_config(config.model)
  params = jax.eval_shape(model.init, jax.random.key(0), batch)
  outputs = jax.eval_shape(model.apply, params, batch)
  assert set(outputs) == set(config.tasks)
  for task, output in outputs.items():
    assert output.shape == (2, config.model.heads[task].num_classes)
