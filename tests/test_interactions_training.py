"""Through the real trainer: an interaction-capable fusion learns the synergy (XOR) config to
within 3 points of its Bayes accuracy, while concatenation, which is additive, stays at chance."""
import os

import pytest

from mmjax import data
from mmjax.data import interactions
from mmjax.train import loop
from mmjax.train.defaults import load_config

CONFIG_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "experiments", "configs", "interactions.py")


@pytest.fixture(scope="module")
def synergy_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("tfds"))
  data.prepare("interactions/synergy", directory)
  return directory


def train(fusion, data_dir, workdir):
  config = load_config(CONFIG_FILE, f"synergy,{fusion}")
  config.dataset.data_dir = data_dir
  config.total_steps = 600
  config.eval_every_steps = 600
  config.checkpoint_every_steps = 600
  return loop.train_and_evaluate(config, workdir)["test"]["accuracy"]


def test_low_rank_fusion_solves_synergy(synergy_dir, tmp_path):
  assert train("low_rank", synergy_dir, str(tmp_path)) >= interactions.bayes_accuracy("synergy") - 0.03


def test_concat_fusion_with_a_linear_head_stays_at_chance_on_synergy(synergy_dir, tmp_path):
  assert train("concat", synergy_dir, str(tmp_path)) <= 0.56
