"""Trains a small seed model on this host's devices under several drivers and prints, as one JSON
line, the largest parameter difference of each run from the one-device run. The `contrastive_`
runs add a SigLIP task (its ring layout) and a CLIP task (its local layout) between text and
image, both in chunks of up to 3 columns, their negatives from every device and, with
accumulation, every micro-batch, and combine the three tasks with PCGrad (per-task gradients
summed over the devices before the surgery); the others train with modality dropout and OGM-GE
(masks drawn for the global batch, noise from the step's key after the gradients are summed).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python train_on_devices.py DATA_DIR WORKDIR

Run by tests/test_parallel.py in a subprocess, because the device count is fixed before JAX
starts."""
import json
import os
import sys

import jax
import numpy as np

from mmjax.balancing import balancing_config
from mmjax.model import encoder_config, head_config
from mmjax.tasks import task_config, weighting_config
from mmjax.train import loop
from mmjax.train.defaults import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# name: (driver, devices, fsdp, micro-batches, with a contrastive task)
# (Accumulation is run with the contrastive tasks, which train the classification task too.)
CASES = {"jit_1": ("jit", 1, 1, 1, False), "jit_8": ("jit", 8, 1, 1, False),
         "pmap_8": ("pmap", 8, 1, 1, False), "jit_8_fsdp_2": ("jit", 8, 2, 1, False),
         "contrastive_jit_1": ("jit", 1, 1, 1, True), "contrastive_jit_8": ("jit", 8, 1, 1, True),
         "contrastive_pmap_8": ("pmap", 8, 1, 1, True),
         "contrastive_jit_8_accum_2": ("jit", 8, 1, 2, True),
         "contrastive_pmap_8_accum_2": ("pmap", 8, 1, 2, True)}


def config_for(data_dir, driver, devices, fsdp, steps, grad_accum_steps=1, contrastive=False):
  config = load_config(os.path.join(REPO, "experiments", "configs", "seed_text_image.py"))
  config.dataset.data_dir = data_dir
  config.model.encoders.text = encoder_config("lstm", vocab_size=64, embed_dim=8, hidden_dim=16,
                                              num_layers=2)
  config.model.encoders.image = encoder_config("conv_pool", channels=8)
  config.batch_size, config.eval_batch_size = 32, 400
  config.total_steps, config.optimizer.warmup_steps = steps, 2
  config.log_every_steps = config.evals.validation.every_steps = config.checkpoint_every_steps = steps
  config.parallel.driver, config.parallel.num_devices, config.parallel.fsdp = driver, devices, fsdp
  config.grad_accum_steps = grad_accum_steps
  if contrastive:
    config.model.heads.pair = head_config("contrastive", modalities=("text", "image"),
                                          embed_dim=8)
    config.tasks.pair = task_config("contrastive", loss="siglip", chunk_size=3)
    config.model.heads.pair_clip = head_config("contrastive", modalities=("text", "image"),
                                               embed_dim=8)
    config.tasks.pair_clip = task_config("contrastive", loss="infonce", chunk_size=3)
    config.task_weighting = weighting_config("pcgrad")
  else:
    config.modality_dropout.rate = 0.3
    config.balancing = balancing_config("ogm_ge", end_step=steps)
  return config


def multiprocess_config(data_dir, devices, total_steps):
  """The config of `train_multiprocess.py`: constant learning rate after warm-up, a log line per
  step, no regular checkpoint before the end; with the contrastive task, whose ring passes its
  blocks between the processes."""
  config = config_for(data_dir, "jit", devices, 1, total_steps, contrastive=True)
  config.optimizer.final_lr_fraction = 1.0
  config.log_every_steps = 1
  config.checkpoint_every_steps = 100_000
  return config


def final_params(config, workdir):
  return jax.device_get(loop.restore_checkpoint(config, workdir).state.params)


def main(data_dir, workdir, steps=10):
  params, results = {}, {}
  for name, (driver, devices, fsdp, micro_batches, contrastive) in CASES.items():
    config = config_for(data_dir, driver, devices, fsdp, steps, micro_batches, contrastive)
    results[name] = loop.train_and_evaluate(config, os.path.join(workdir, name))
    params[name] = final_params(config, os.path.join(workdir, name))
  state = loop._setup(config_for(data_dir, "jit", 8, 2, steps)).state
  embedding = state.params["encoders_text"]["embedding"]["embedding"]
  report = {"devices": jax.device_count(),
            "fsdp_2_embedding": {"shape": list(embedding.shape),
                                 "shard_shape": list(embedding.addressable_shards[0].data.shape)}}
  for name in CASES:
    reference = jax.tree.leaves(params["contrastive_jit_1" if CASES[name][4] else "jit_1"])
    leaves = jax.tree.leaves(params[name])
    report[name] = {
        "max_abs_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(leaves, reference)),
        "max_abs_param": max(float(np.max(np.abs(b))) for b in reference),
        "validation": results[name]["validation"], "test": results[name]["test"]}
  print(json.dumps(report))


if __name__ == "__main__":
  main(*sys.argv[1:3])
