"""Every config under experiments/configs loads and builds a model that initialises on a batch of
its dataset's shapes (abstractly: no compilation); every fusion is reachable by its config name."""
import glob
import os

import jax
import numpy as np
import pretrained_helpers
import pytest

from mmjax import data, pretrained
from mmjax.data import interactions, mm_shapes
from mmjax.fusion import FUSIONS
from mmjax.model import model_from_config
from mmjax.train.defaults import load_config

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "experiments", "configs")
# Configs that need an argument (a pretrained checkpoint folder) get the tiny reference ones.
NEEDS_ARG = ("interactions.py", "clip_finetune.py", "mm_imdb_pretrained.py")
CASES = [(os.path.basename(path), None) for path in sorted(glob.glob(f"{CONFIG_DIR}/*.py"))
         if not path.endswith(NEEDS_ARG)]
CASES += [("clip_finetune.py", pretrained_helpers.path(case)) for case in
          ("clip_quick_gelu", "siglip")]
CASES += [("mm_imdb_pretrained.py", f"{pretrained_helpers.path(text)},"
           f"{pretrained_helpers.path(image)},{fusion}")
          for text, image, fusion in (("bert", "vit", "gmu"), ("roberta", "clip_quick_gelu", "late"),
                                      ("bert", "vit", "concat"))]
CASES += [("contrastive_probe.py", arg) for arg in ("pretrain,siglip", "probe")]
CASES += [("seed_text_image.py", arg) for arg in ("late", "gmu", "tensor", "low_rank")]
CASES += [("av_mnist.py", arg) for arg in ("image", "audio", "concat", "late", "tensor",
                                          "low_rank,multibench")]
CASES += [("mm_imdb.py", arg) for arg in ("text", "image", "concat", "late", "low_rank")]
CASES += [("mosi.py", arg) for arg in ("text", "audio", "vision", "concat", "late", "tensor",
                                       "mult", "low_rank,mosei")]
CASES += [("interactions.py", f"{data_config},{fusion}") for fusion in FUSIONS
          for data_config in ("synergy", "mixed", "rank6")]
CASES += [("interactions.py", f"synergy3,{fusion}") for fusion in FUSIONS
          if fusion not in ("multiplicative", "mfb")]   # 2 modalities only


def example_batch(dataset_name, tmp_path, model):
  """Two examples of the dataset: generated ones for the built-in datasets, zeros shaped by the
  builder's features (no files needed) for the published ones, and for a folder of your own
  (whose features come from its files) zeros shaped as its pretrained towers read them."""
  dataset, _, builder_config = dataset_name.partition("/")
  if dataset == "multimodal_folder":
    batch = {}
    for modality, encoder in model.encoders.items():
      inputs = pretrained.example_inputs(encoder)
      batch[modality] = np.concatenate([np.asarray(inputs[0])] * 2)
      if len(inputs) > 1:
        batch[f"{modality}_mask"] = np.concatenate([np.asarray(inputs[1])] * 2)
    return batch
  if dataset == "mm_shapes":
    example = mm_shapes.make_example(0, 0, 0)
  elif dataset == "interactions":
    example = interactions.make_example(builder_config, 0, 0, 0)
  else:
    spec = data.DATASETS[dataset]
    kwargs = {"config": builder_config} if builder_config else {}
    features = spec.builder(data_dir=str(tmp_path), **kwargs).info.features
    example = {key: np.zeros(feature.shape, feature.np_dtype)
               for key, feature in features.items() if feature.np_dtype != object}
  model_inputs = data.DATASETS[dataset].model_inputs
  return model_inputs({key: np.stack([np.asarray(value)] * 2) for key, value in example.items()})


@pytest.mark.parametrize("name,arg", CASES, ids=[f"{n}:{a}" if a else n for n, a in CASES])
def test_config_builds_a_model_with_one_output_per_task(name, arg, tmp_path):
  config = load_config(os.path.join(CONFIG_DIR, name), arg)
  model = model_from_config(config.model, config.tasks)
  batch = example_batch(config.dataset.name, tmp_path, model)
  params = jax.eval_shape(model.init, jax.random.key(0), batch)
  outputs = jax.eval_shape(model.apply, params, batch)
  assert set(outputs) == set(config.tasks)
  for task, output in outputs.items():
    head = config.model.heads[task]
    if head.name == "contrastive":
      assert output["a"].shape == output["b"].shape == (2, head.embed_dim)
    else:
      assert output.shape == (2, head.num_classes)


def _training_options(config):
  dropout = config.modality_dropout
  return {"dropout": bool(dropout.rate or dropout.rates or dropout.subsets),
          "ogm_ge": config.balancing.name == "ogm_ge",
          "gradient_blend": config.task_weighting.name == "gradient_blend"}


@pytest.mark.parametrize("name,base,options", [
    *[("interactions.py", f"synergy,{fusion}", ("dropout",)) for fusion in FUSIONS],
    *[("av_mnist.py", fusion, ("dropout", "ogm_ge", "gradient_blend"))
      for fusion in ("concat", "late", "tensor", "low_rank")]])
def test_a_training_option_turns_on_what_it_names_and_nothing_else(name, base, options):
  """`FUSION` alone trains plainly and `FUSION,<option>` turns on that option only (bug caught:
  interactions.py took a fusion's own options, late fusion's `dim`, for `dropout`)."""
  path = os.path.join(CONFIG_DIR, name)
  plain = dict.fromkeys(("dropout", "ogm_ge", "gradient_blend"), False)
  assert _training_options(load_config(path, base)) == plain
  for option in options:
    assert _training_options(load_config(path, f"{base},{option}")) == {**plain, option: True}
