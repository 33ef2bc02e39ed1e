"""Through the real trainer: an interaction-capable fusion learns the synergy (XOR) config to
within 3 points of its Bayes accuracy, while concatenation, which is additive, stays at chance;
on synergy3 a trimodal product (LMF) learns the 3-way XOR while FiLM, whose interactions are
pairwise, stays at chance; on rank6, LMF of rank 2 stays at or above its Eckart–Young floor and
rank 6 reaches the Bayes MSE."""
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


def train(fusion, data_dir, workdir, data_config="synergy", steps=600, **fusion_fields):
  config = load_config(CONFIG_FILE, f"{data_config},{fusion}")
  config.dataset.data_dir = data_dir
  config.total_steps = config.evals.validation.every_steps = config.checkpoint_every_steps = steps
  config.model.fusion.update(fusion_fields)
  test = loop.train_and_evaluate(config, workdir)["test"]
  return test["accuracy"] if "accuracy" in test else test["label/mse"]


def test_low_rank_fusion_solves_synergy(synergy_dir, tmp_path):
  assert train("low_rank", synergy_dir, str(tmp_path)) >= interactions.bayes_accuracy("synergy") - 0.03


def test_concat_fusion_with_a_linear_head_stays_at_chance_on_synergy(synergy_dir, tmp_path):
  assert train("concat", synergy_dir, str(tmp_path)) <= 0.56


@pytest.fixture(scope="module")
def order_and_rank_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("tfds"))
  data.prepare("interactions/synergy3", directory)
  data.prepare("interactions/rank6", directory)
  return directory


def test_a_trimodal_product_learns_the_three_way_xor_and_pairwise_film_does_not(
    order_and_rank_dir, tmp_path):
  bayes = interactions.bayes_accuracy("synergy3")
  assert train("low_rank", order_and_rank_dir, str(tmp_path / "lmf"), "synergy3",
               steps=1500) >= bayes - 0.03
  assert train("film", order_and_rank_dir, str(tmp_path / "film"), "synergy3",
               steps=300) <= 0.56


def test_low_rank_fusion_falls_short_below_the_target_rank_and_reaches_bayes_at_it(
    order_and_rank_dir, tmp_path):
  """Bugs caught: LMF's `rank` or its output width ignored (rank 2 would beat its floor, or rank
  6 would not reach Bayes). 2,000 test examples: the floor's sampling error is about 0.03."""
  floor = interactions.rank_floor_mse("rank6", 2)
  assert train("low_rank", order_and_rank_dir, str(tmp_path / "r2"), "rank6", steps=500,
               rank=2) >= floor - 0.05
  bayes = interactions.rank_floor_mse("rank6", 6)
  assert train("low_rank", order_and_rank_dir, str(tmp_path / "r6"), "rank6", steps=2000,
               rank=6) <= bayes + 0.05
