"""`mmjax export`: a checkpoint's inference function as StableHLO with a symbolic batch; what
`mmjax.load_exported` runs equals the in-process model's predictions on a batch size it was not
exported with, for classification, regression and multi-label tasks, with EMA parameters."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import mmjax
from mmjax.errors import DataError, WorkdirError
from mmjax.export import export_checkpoint
from mmjax.train import loop

from config_helpers import tiny_multitask_config


@pytest.fixture(scope="module")
def exported(data_dir, tmp_path_factory):
  config = tiny_multitask_config(data_dir)
  workdir = str(tmp_path_factory.mktemp("run"))
  loop.train_and_evaluate(config, workdir)
  return config, workdir, export_checkpoint(config, workdir)


def test_the_exported_model_equals_the_in_process_one_on_another_batch_size(exported):
  """Bug caught: exporting the raw parameters where evaluation uses the EMA, or head outputs
  where the task predicts (softmax, sigmoid, offset + scale·f)."""
  config, workdir, directory = exported
  readers, tasks, _, state = loop.restore_checkpoint(config, workdir)[:4]
  batch = readers["test"].read(np.arange(7))
  outputs = state.apply_fn({"params": state.ema_params}, batch)
  model = mmjax.load_exported(directory)
  found = model({key: batch[key] for key in model.signature["inputs"]})
  assert set(found) == {"label", "size", "shapes_present"}
  label = np.asarray(jax.nn.softmax(outputs["label"]))
  np.testing.assert_allclose(found["label"], label, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(found["label"].sum(axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(found["size"], 7.75 + 1.3 * np.asarray(outputs["size"]), rtol=1e-5)
  np.testing.assert_allclose(found["shapes_present"],
                             np.asarray(jax.nn.sigmoid(outputs["shapes_present"])), rtol=1e-5)
  raw = state.apply_fn({"params": state.params}, batch)["label"]
  assert not np.allclose(np.asarray(jax.nn.softmax(raw)), found["label"], atol=1e-6)
  assert len(model({key: batch[key][:2] for key in model.signature["inputs"]})["label"]) == 2


def test_the_signature_names_inputs_outputs_and_preprocessing(exported):
  config, _, directory = exported
  signature = json.load(open(os.path.join(directory, "model.json")))
  assert signature["format"] == "mmjax-export/1" and signature["step"] == 4
  assert signature["inputs"]["image"]["shape"][0] == "b"
  assert signature["inputs"]["text"]["dtype"] == "int32"
  assert set(signature["inputs"]) <= {"text", "text_mask", "image", "image_mask"}
  assert signature["outputs"]["label"] == {"kind": "classification", "shape": ["b", 9]}
  assert signature["outputs"]["size"]["kind"] == "regression"
  assert signature["dataset"]["name"] == config.dataset.name


def test_a_batch_that_does_not_fit_the_export_is_one_line(exported):
  _, _, directory = exported
  model = mmjax.load_exported(directory)
  inputs = model.signature["inputs"]
  batch = {key: np.zeros([2, *spec["shape"][1:]], spec["dtype"]) for key, spec in inputs.items()}
  with pytest.raises(DataError, match="the batch has no 'image'"):
    model({key: value for key, value in batch.items() if key != "image"})
  with pytest.raises(DataError, match=r"batch\['image'\] is float64"):
    model({**batch, "image": batch["image"].astype(np.float64)})
  with pytest.raises(WorkdirError, match="does not exist; run `mmjax export`"):
    mmjax.load_exported(os.path.join(directory, "nowhere"))


def test_cli_export_writes_the_model_to_out(exported, tmp_path):
  config, workdir, _ = exported
  config_file = tmp_path / "config.py"
  config_file.write_text(
      "import sys\n"
      f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
      "from config_helpers import tiny_multitask_config\n"
      f"def get_config():\n  return tiny_multitask_config({config.dataset.data_dir!r})\n")
  result = subprocess.run([sys.executable, "-m", "mmjax.cli", "export", f"--config={config_file}",
                           f"--workdir={workdir}", f"--out={tmp_path / 'out'}"],
                          capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
  assert result.returncode == 0, result.stderr[-2000:]
  assert f"mmjax: exported to {tmp_path / 'out'}" in result.stdout
  assert os.path.getsize(tmp_path / "out" / "model.stablehlo") > 0
