"""Fine-tuning a pretrained tower: the tiny reference CLIP trained through `mmjax train` with
`experiments/configs/clip_finetune.py` on a folder of coloured images and captions, its images
and captions preprocessed by the checkpoint's own processor and tokenizer. The towers start from
the checkpoint; locked layers stay exactly as loaded; each update's size follows the layer-wise
decay; a run stopped and resumed ends with the parameters of one that was not; `mmjax eval`
reports zero-shot accuracy from the class names.
"""
import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from config_helpers import REPO
from PIL import Image
from pretrained_helpers import path

from mmjax import data, pretrained
from mmjax.data import multimodal_folder, processors
from mmjax.errors import ConfigError
from mmjax.train import finetune, loop
from mmjax.train.defaults import load_config

CLIP = path("clip_quick_gelu")
CONFIG = os.path.join(REPO, "experiments", "configs", "clip_finetune.py")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 40, 210)}


def write_folder(folder):
  rng = np.random.default_rng(0)
  os.makedirs(folder / "images")
  tables = {"train.csv": 24, "validation.csv": 6, "test.csv": 6}
  for table, count in tables.items():
    lines = ["image,text,label"]
    for i in range(count):
      colour = list(COLOURS)[i % 3]
      pixels = np.clip(np.array(COLOURS[colour]) + rng.normal(0, 20, (40, 48, 3)), 0, 255)
      name = f"images/{table[:-4]}_{i}.png"
      Image.fromarray(pixels.astype(np.uint8)).save(folder / name)
      lines.append(f"{name},a photo of a {colour} thing,{colour}")
    (folder / table).write_text("\n".join(lines) + "\n")
  return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return write_folder(tmp_path_factory.mktemp("captions"))


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


# Small, with a constant learning rate (so that a run's steps do not depend on total_steps).
OVERRIDES = dict(batch_size=6, eval_batch_size=6, log_every_steps=1, checkpoint_every_steps=2,
                 **{"optimizer.warmup_steps": 0, "optimizer.final_lr_fraction": 1.0,
                    "optimizer.learning_rate": 1e-3, "optimizer.weight_decay": 0.0,
                    "evals.validation.every_steps": 2, "evals.retrieval.every_steps": 2,
                    "evals.zero_shot.every_steps": 2,
                    "finetune.image.unlock_last_blocks": 1, "finetune.text.unlock_last_blocks": 1,
                    "finetune.image.layer_decay": 0.5, "finetune.text.layer_decay": 0.5})


def overrides(folder, tfds_dir, total_steps):
  return dict(OVERRIDES, total_steps=total_steps, **{"dataset.manual_dir": str(folder),
                                                     "dataset.data_dir": tfds_dir})


def flags(folder, tfds_dir, total_steps):
  """The command line's `--config.FIELD=VALUE` of `overrides`."""
  return [f"--config.{key}={value}"
          for key, value in overrides(folder, tfds_dir, total_steps).items()]


def config_of(folder, tfds_dir, total_steps):
  """The config those flags give, in process."""
  config = load_config(CONFIG, CLIP)
  for key, value in overrides(folder, tfds_dir, total_steps).items():
    *parents, name = key.split(".")
    target = config
    for parent in parents:
      target = target[parent]
    target[name] = value
  return config


def mmjax(*args):
  result = subprocess.run([sys.executable, "-m", "mmjax.cli", *args], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, "TQDM_DISABLE": "1"})
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def leaves(tree):
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_the_folder_goes_through_the_checkpoints_processor_and_tokenizer(folder, tfds_dir):
  builder = data.prepare("multimodal_folder", tfds_dir, str(folder),
                         {"tokenizer": CLIP, "image_processor": CLIP})
  example = builder.as_data_source(split="train")[0]
  ids, mask = processors.TextTokenizer(CLIP)(["a photo of a red thing"])
  np.testing.assert_array_equal(example["text"], ids[0])
  np.testing.assert_array_equal(example["text_mask"], mask[0].astype(bool))
  with Image.open(folder / "images" / "train_0.png") as image:
    expected = processors.ImageProcessor(CLIP).process(image)
  np.testing.assert_array_equal(example["image"], expected)
  inputs = multimodal_folder.model_inputs({k: np.asarray(v)[None] for k, v in example.items()})
  np.testing.assert_array_equal(inputs["image"][0], expected)      # not divided by 255 again


def test_a_missing_tokenizer_file_is_named_when_the_config_is_made(folder, tmp_path):
  with pytest.raises(ConfigError, match="has no tokenizer.json"):
    multimodal_folder.config_from_manual_dir(folder, tokenizer=str(tmp_path))


def test_fine_tuning_resumes_exactly_keeps_locked_layers_and_evaluates_zero_shot(
    folder, tfds_dir, tmp_path):
  # Two steps in process, then resumed to four through the CLI.
  resumed = str(tmp_path / "resumed")
  loop.train_and_evaluate(config_of(folder, tfds_dir, 2), resumed)
  mmjax("train", f"--config={CONFIG}:{CLIP}", f"--workdir={resumed}", *flags(folder, tfds_dir, 4))
  # In process: four steps without a stop.
  straight = str(tmp_path / "straight")
  loop.train_and_evaluate(config_of(folder, tfds_dir, 4), straight)
  config = config_of(folder, tfds_dir, 4)
  params = {name: leaves(loop.restore_checkpoint(config, workdir).state.params)
            for name, workdir in (("resumed", resumed), ("straight", straight))}
  assert params["resumed"].keys() == params["straight"].keys()
  for key, value in params["straight"].items():
    np.testing.assert_array_equal(params["resumed"][key], value, err_msg=key)

  # Locked: layer 0 of each two-layer tower and the embeddings are exactly the checkpoint's;
  # unlocked: the last layer, the projections and the logit scale moved.
  loaded = leaves(pretrained.load(CLIP).params)
  trained = params["straight"]
  for tower, collection in (("vision", "encoders_image"), ("text", "encoders_text")):
    for key, value in loaded.items():
      if not key.startswith(f"['{tower}']"):
        continue
      mine = trained[key.replace(f"['{tower}']", f"['{collection}']", 1)]
      if "layer_0" in key or "embedding" in key or "pre_layernorm" in key:
        np.testing.assert_array_equal(mine, value, err_msg=key)
      elif "layer_1" in key or "projection" in key:
        assert not np.array_equal(mine, value), key
  assert trained["['heads_pair']['log_scale']"] != loaded["['logit_scale']"]

  # Zero-shot through `mmjax eval`, from the class names of the label column.
  mmjax("eval", f"--config={CONFIG}:{CLIP}", f"--workdir={straight}",
        *flags(folder, tfds_dir, 4))
  with open(os.path.join(straight, "eval_results.json")) as file:
    found = json.load(file)
  assert found["zero_shot"]["examples"] == 6
  assert found["zero_shot"]["accuracy"] in {k / 6 for k in range(7)}
  assert set(found["retrieval"]) >= {"a_to_b/R@1", "b_to_a/R@5"}


def test_layer_decay_scales_the_first_adam_step_of_each_layer():
  """Adam's first update is lr·g/(|g| + ε) ≈ ±lr elementwise whatever the gradient's size, so
  after one step |Δθ| / lr is each parameter's scale: 0 for locked ones, decay^(L + 1 − depth)
  for the others (two layers, decay 0.5: the output side 1, layer 1 0.5... here with layer 1
  locked out: unlock_last_blocks=1 keeps layer 2 (0.5) and the output side (1))."""
  from mmjax.model import encoder_config, fusion_config, head_config, model_from_config
  from mmjax.train.state import init_state, make_optimizer
  model = model_from_config({
      "encoders": {"image": encoder_config("vit_pretrained", checkpoint=path("vit"))},
      "fusion": fusion_config("concat"), "heads": {"label": head_config("linear",
                                                                       num_classes=3)}})
  batch = {"image": np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)}
  params = model.init(jax.random.key(0), batch)["params"]
  spec = ml_collections.ConfigDict({"image": finetune.finetune_config(
      lock=True, unlock_last_blocks=1, layer_decay=0.5)})
  scales = finetune.learning_rate_scales(spec, model, params)
  optimizer = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, warmup_steps=0, final_lr_fraction=1.0, grad_clip_norm=1.0, b1=0.9,
      b2=0.999, eps=1e-12, weight_decay=0.0, weight_decay_mask="matrices", frozen=""))
  tx, _ = make_optimizer(optimizer, 10, scales)
  state = init_state(model, tx, jax.random.key(0), batch)
  grads = jax.grad(lambda p: (state.apply_fn({"params": p}, batch)["label"] ** 2).sum())(
      state.params)
  moved = state.apply_gradients(grads=grads)
  expected = {"encoder']['layer_0": 0.0, "patch_embedding": 0.0, "encoder']['layer_1": 0.5,
              "final_norm": 1.0, "pooler": 1.0}
  before, after = leaves(state.params), leaves(moved.params)
  for key in before:
    if not key.startswith("['encoders_image']"):
      continue
    step = np.abs(after[key] - before[key]) / 1e-3
    scale = next((v for k, v in expected.items() if k in key), None)
    if scale is not None:
      nonzero = np.abs(leaves(grads)[key]) > 1e-6
      np.testing.assert_allclose(step[nonzero], scale, rtol=1e-3, err_msg=key)


def test_mmimdb_release_becomes_a_folder_for_bert_and_vit(tmp_path):
  """experiments/pretrained/mmimdb_folder.py on a three-movie imitation of the release: the
  longest plot, the 23-genre labels (a movie with none left out), the dev split as validation;
  the folder then prepares with BERT's tokenizer and ViT's image processor."""
  sys.path.insert(0, os.path.join(REPO, "experiments", "pretrained"))
  import mmimdb_folder
  os.makedirs(tmp_path / "dataset")
  movies = {"0000001": (["short", "a much longer plot about a detective"], ["Drama", "Crime"]),
            "0000002": (["a comedy"], ["Comedy"]),
            "0000003": (["no usable genre"], ["Reality-TV"])}
  for movie_id, (plots, genres) in movies.items():
    (tmp_path / "dataset" / f"{movie_id}.json").write_text(json.dumps({"plot": plots,
                                                                        "genres": genres}))
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "dataset" / f"{movie_id}.jpeg")
  (tmp_path / "split.json").write_text(json.dumps({"train": ["0000001", "0000002", "0000003"],
                                                   "dev": ["0000002"], "test": ["0000001"]}))
  assert mmimdb_folder.write_folder(str(tmp_path)) == {"train": [2, 1], "validation": [1, 0],
                                                       "test": [1, 0]}
  rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
  assert rows[0] == {"image": "dataset/0000001.jpeg",
                     "text": "a much longer plot about a detective", "genres": ["Drama", "Crime"]}
  builder = data.prepare("multimodal_folder", str(tmp_path / "tfds"), str(tmp_path),
                         {"tokenizer": path("bert"), "tokenizer_max_length": 16,
                          "image_processor": path("vit")})
  assert builder.info.metadata["labels"] == {"genres": "multilabel"}
  example = builder.as_data_source(split="train")[0]
  assert example["text"].shape == (16,) and example["image"].shape == (32, 32, 3)
  np.testing.assert_array_equal(example["text"], processors.TextTokenizer(path("bert"), 16)(
      ["a much longer plot about a detective"])[0][0])
