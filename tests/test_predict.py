"""`mmjax predict`: one record per real example of a split, in order, with each task's
predictions as the in-process model gives them and the labels the examples have; JSONL or CSV;
the same records on 1 or 8 devices."""
import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from mmjax import predict
from mmjax.errors import ConfigError
from mmjax.train import loop

from config_helpers import REPO, tiny_multitask_config
from process_helpers import host_devices_env


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
  config = tiny_multitask_config(data_dir)
  workdir = str(tmp_path_factory.mktemp("run"))
  loop.train_and_evaluate(config, workdir)
  return config, workdir


def test_a_record_per_example_in_order_with_the_models_predictions_and_known_labels(trained):
  """Bugs caught: the padding rows of the last batch written out, the raw parameters instead of
  the EMA, a label reported for an example without one."""
  config, workdir = trained
  records = predict.predict_records(config, workdir, split="test", top_k=3)
  readers, _, _, state = loop.restore_checkpoint(config, workdir)[:4]
  reader = readers["test"]
  assert [r["index"] for r in records] == list(range(len(reader)))
  rows = np.arange(len(reader) - 5, len(reader))            # the last, padded batch's rows
  batch = reader.read(rows)
  outputs = state.apply_fn({"params": state.ema_params}, batch)
  probabilities = np.asarray(jax.nn.softmax(outputs["label"]))
  for row, record in zip(range(5), records[-5:]):
    label = record["label"]
    np.testing.assert_allclose(label["probabilities"], probabilities[row], rtol=1e-5, atol=1e-7)
    assert label["top_k"] == list(np.argsort(-probabilities[row], kind="stable")[:3])
    assert label["label"] == int(batch["label"][row])
    size = record["size"]
    assert size["value"] == pytest.approx(7.75 + 1.3 * float(outputs["size"][row, 0]), rel=1e-5)
    assert ("label" in size) == bool(batch["size_mask"][row])
    scores = np.asarray(jax.nn.sigmoid(outputs["shapes_present"][row]))
    np.testing.assert_allclose(record["shapes_present"]["scores"], scores, rtol=1e-5)
    assert record["shapes_present"]["predicted"] == list(np.flatnonzero(scores >= 0.5))
  unlabelled = sum("label" not in r["size"] for r in records)
  assert 0 < unlabelled < len(records)


def test_predictions_are_written_as_jsonl_or_csv(trained, tmp_path):
  config, workdir = trained
  path = predict.predict_checkpoint(config, workdir, split="validation")
  assert path == os.path.join(workdir, "predictions_validation.jsonl")
  records = [json.loads(line) for line in open(path)]
  table = list(csv.DictReader(open(predict.write_predictions(records, str(tmp_path / "p.csv")))))
  assert len(table) == len(records)
  assert json.loads(table[3]["label/probabilities"]) == records[3]["label"]["probabilities"]
  assert float(table[3]["size/value"]) == records[3]["size"]["value"]
  with pytest.raises(ConfigError, match="--split 'dev' is not one of the run's splits"):
    predict.predict_records(config, workdir, split="dev")


ON_DEVICES = """
import json, sys
sys.path.insert(0, {tests!r})
from config_helpers import tiny_multitask_config
from mmjax import predict
records = {{}}
for devices in (1, 8):
  config = tiny_multitask_config({data_dir!r})
  config.parallel.num_devices = devices
  records[devices] = predict.predict_records(config, {workdir!r}, split="test")
print(json.dumps(records))
"""


def test_the_records_are_the_same_on_1_and_8_devices(trained, data_dir):
  config, workdir = trained
  script = ON_DEVICES.format(tests=os.path.join(REPO, "tests"), data_dir=data_dir,
                             workdir=workdir)
  env = {**host_devices_env(8), "TQDM_DISABLE": "1"}
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  records = json.loads(result.stdout.strip().splitlines()[-1])
  one, eight = records["1"], records["8"]
  assert [r["index"] for r in one] == [r["index"] for r in eight]
  for a, b in zip(one, eight):
    assert a["label"]["top_k"][0] == b["label"]["top_k"][0] and a["size"].keys() == b["size"].keys()
    np.testing.assert_allclose(a["label"]["probabilities"], b["label"]["probabilities"],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a["size"]["value"], b["size"]["value"], rtol=1e-5)
