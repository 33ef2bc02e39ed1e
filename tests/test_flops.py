"""Model FLOPs from the jaxpr (scans counted at their length, which XLA's cost analysis does not
do), the device peak table, and every train line's step time, input wait and MFU; a profile when
asked."""
import glob
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from mmjax.encoders.text import LSTMTextEncoder
from mmjax.train import flops, loop

from config_helpers import tiny_config


def xla_flops(fn, *args):
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]


def test_a_matrix_product_is_2mnk_as_xla_counts_it():
  x, w = jnp.ones((32, 64)), jnp.ones((64, 16))
  assert flops.matmul_flops(jnp.matmul, x, w) == 2 * 32 * 64 * 16 == xla_flops(jnp.matmul, x, w)
  batched = lambda a, b: jnp.einsum("bij,bjk->bik", a, b)
  assert flops.matmul_flops(batched, jnp.ones((3, 4, 5)), jnp.ones((3, 5, 6))) == 2 * 3 * 4 * 5 * 6


def test_a_scan_counts_its_body_times_its_length_where_xla_counts_it_once():
  """Bug caught (in XLA's count, which results.json's train_flops_per_example reports): an
  LSTM over T steps, or k accumulated micro-batches, counted as one."""
  def repeated(x, length):
    return jax.lax.scan(lambda c, _: (c @ x, None), x, None, length=length)[0]
  x = jnp.ones((16, 16))
  for length in (1, 8):
    assert flops.matmul_flops(lambda x: repeated(x, length), x) == length * 2 * 16 ** 3
  # XLA: the body once, plus the loop counter's few scalar operations.
  assert xla_flops(lambda x: repeated(x, 8), x) < 1.01 * 2 * 16 ** 3


def test_a_cond_counts_its_costliest_branch_and_a_convolution_its_kernel():
  x = jnp.ones((8, 8))
  branches = lambda p, x: jax.lax.cond(p, lambda x: x @ x @ x, lambda x: x, x)
  assert flops.matmul_flops(branches, True, x) == 2 * 2 * 8 ** 3
  conv = nn.Conv(8, (3, 3), padding="VALID")
  images = jnp.ones((4, 10, 10, 3))
  params = conv.init(jax.random.key(0), images)
  assert flops.matmul_flops(conv.apply, params, images) == 2 * (4 * 8 * 8 * 8) * 9 * 3
  # XLA's count adds the bias: one addition per output value.
  assert flops.matmul_flops(conv.apply, params, images) + 4 * 8 * 8 * 8 == xla_flops(
      conv.apply, params, images)


def test_the_lstm_encoders_flops_grow_with_the_sequence():
  encoder = LSTMTextEncoder(vocab_size=50, embed_dim=8, hidden_dim=16, num_layers=1)
  count = {}
  for steps in (8, 16):
    tokens = jnp.ones((2, steps), jnp.int32)
    params = encoder.init(jax.random.key(0), tokens)
    count[steps] = flops.matmul_flops(encoder.apply, params, tokens)
  assert count[16] == pytest.approx(2 * count[8], rel=0.01)


def test_peak_flops_by_device_kind_and_dtype():
  assert flops.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
  assert flops.peak_flops("NVIDIA H100 PCIe", "bfloat16") == 756e12
  assert flops.peak_flops("NVIDIA A100-SXM4-80GB", "float32") == 156e12
  assert flops.peak_flops("TPU v5 lite", "float16") == 197e12
  assert flops.peak_flops("TPU v4", "float32") is None
  assert flops.peak_flops("cpu", "float32") is None
  assert flops.mfu(2e12, 0.5, 4, 1e12) == pytest.approx(1.0)
  assert flops.mfu(2e12, 0.5, 4, None) is None


def test_train_lines_carry_step_time_input_wait_and_mfu_and_a_profile_is_written(
    data_dir, tmp_path, monkeypatch):
  """On the CPU (no known peak) MFU is null; with a peak it is the step's model FLOPs per second
  over the peak. profile_steps writes a jax.profiler trace of those steps."""
  monkeypatch.setattr(flops, "PEAK_FLOPS", (("cpu", {"float32": 1e9}),))
  config = tiny_config(data_dir, total_steps=6)
  config.profile_steps = (3, 4)
  results = loop.train_and_evaluate(config, str(tmp_path))
  lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  train = [line for line in lines if line["split"] == "train"]
  assert len(train) == 3
  per_step = results["complexity"]["train_model_flops_per_example"] * config.batch_size
  for line in train:
    assert line["step_seconds"] > 0 and 0 <= line["input_wait_fraction"] <= 1
    assert line["samples_per_second"] == pytest.approx(config.batch_size / line["step_seconds"])
    assert line["mfu"] == pytest.approx(per_step / line["step_seconds"] / 1e9)
  assert results["complexity"]["train_model_flops_per_example"] > 0
  assert glob.glob(str(tmp_path / "profile" / "plugins" / "profile" / "*" / "*.xplane.pb"))

  monkeypatch.setattr(flops, "PEAK_FLOPS", ())
  config.total_steps, config.profile_steps = 8, (0, 0)
  loop.train_and_evaluate(config, str(tmp_path))
  last = [line for line in map(json.loads, open(tmp_path / "metrics.jsonl"))
          if line["split"] == "train"][-1]
  assert last["step"] == 8 and last["mfu"] is None


def test_profile_steps_outside_the_run_are_one_line(data_dir, tmp_path):
  config = tiny_config(data_dir)
  config.profile_steps = (5, 100)
  with pytest.raises(loop.ConfigError, match=r"config.profile_steps=\(5, 100\) must be steps "
                     r"0 < start <= stop <= total_steps=8"):
    loop.train_and_evaluate(config, str(tmp_path))
