"""MultiBench's own AV-MNIST late-fusion training step, timed in PyTorch: the peer of
`bench_multibench.py`, which runs it under `--torch-python` (torch is never an mmjax dependency).

    python experiments/multibench_peer.py --multibench DIR [--batch 64] [--steps 50] [--warmup 5]

DIR is a checkout of github.com/pliang279/MultiBench (nothing is downloaded). The model is that of
its `examples/multimedia/avmnist_simple_late_fusion.py`: `MMDL([LeNet(1, 6, 3), LeNet(1, 6, 5)],
Concat(), MLP(240, 100, 10))` from its `unimodals/common_models.py`, `fusions/common_fusions.py`
and `training_structures/Supervised_Learning.py`; the step timed is the body of the batch loop of
that file's `train()`, with its `deal_with_objective` (CrossEntropyLoss) and its gradient clipping
(`clip_val` 8). `--optimizer adam` (the default: Adam, lr 1e-3, no weight decay, as mmjax's
AV-MNIST config) or `sgd` (the example's SGD, lr 0.1, weight decay 1e-4). Inputs are random
batches of AV-MNIST's shapes as MultiBench's loader gives them: image (B, 1, 28, 28), spectrogram
(B, 1, 112, 112), int64 labels 0..9. Prints one JSON line.

MultiBench's `unimodals/common_models.py` imports torchvision for its VGG/ResNet encoders only;
where torchvision cannot be imported (e.g. no CPU build beside a CPU torch), an empty stand-in
module is put in its place, which LeNet and MLP never touch.
"""
import argparse
import importlib
import json
import os
import sys
import time
import types

import torch
from torch import nn

OPTIMIZERS = {"adam": (torch.optim.Adam, 1e-3, 0.0),   # mmjax's config: Adam, lr 1e-3
              "sgd": (torch.optim.SGD, 0.1, 1e-4)}     # the MultiBench example's


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--multibench", required=True, help="a MultiBench checkout")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--warmup", type=int, default=5)
  parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  return parser.parse_args(argv)


def import_multibench(path):
  """MultiBench's modules, imported from the checkout at `path` (its examples put the checkout's
  root on sys.path the same way)."""
  if not os.path.isfile(os.path.join(path, "unimodals", "common_models.py")):
    sys.exit(f"--multibench {path}: no unimodals/common_models.py; pass a MultiBench checkout")
  sys.path.insert(0, os.path.abspath(path))
  os.environ.setdefault("MPLBACKEND", "Agg")   # its eval_scripts import matplotlib.pyplot
  try:
    importlib.import_module("torchvision")
  except Exception:   # absent, or a CUDA build whose ops fail to load beside a CPU torch
    stub = types.ModuleType("torchvision")
    stub.models = types.ModuleType("torchvision.models")
    sys.modules.update({"torchvision": stub, "torchvision.models": stub.models})
  from fusions.common_fusions import Concat
  from training_structures import Supervised_Learning
  from unimodals.common_models import MLP, LeNet
  return LeNet, MLP, Concat, Supervised_Learning


def main(argv=None):
  args = parse_args(argv)
  torch.set_num_threads(args.threads)
  LeNet, MLP, Concat, supervised = import_multibench(args.multibench)
  torch.manual_seed(0)
  channels = 6   # avmnist_simple_late_fusion.py
  encoders = [LeNet(1, channels, 3), LeNet(1, channels, 5)]
  head = MLP(channels * 40, 100, 10)
  device = torch.device("cpu")
  # train(): model = MMDL(encoders, fusion, head, has_padding=is_packed).to(device)
  model = supervised.MMDL(encoders, Concat(), head, has_padding=False).to(device)
  optimtype, lr, weight_decay = OPTIMIZERS[args.optimizer]
  op = optimtype([p for p in model.parameters() if p.requires_grad], lr=lr,
                 weight_decay=weight_decay)
  objective, clip_val = nn.CrossEntropyLoss(), 8   # train()'s defaults
  generator = torch.Generator().manual_seed(0)
  j = [torch.randn(args.batch, 1, 28, 28, generator=generator),
       torch.randn(args.batch, 1, 112, 112, generator=generator),
       torch.randint(0, 10, (args.batch,), generator=generator)]

  def _processinput(inp):   # train()'s, with input_to_float=True
    return inp.float()

  def run(steps):
    """`steps` iterations of train()'s batch loop (is_packed=False, objective_args_dict=None)."""
    totalloss, totals, loss = 0.0, 0, None
    model.train()
    for _ in range(steps):
      op.zero_grad()
      model.train()
      out = model([_processinput(i).to(device) for i in j[:-1]])
      loss = supervised.deal_with_objective(objective, out, j[-1], None)
      totalloss += loss * len(j[-1])
      totals += len(j[-1])
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), clip_val)
      op.step()
    return loss

  run(args.warmup)
  start = time.perf_counter()
  loss = run(args.steps)
  seconds = time.perf_counter() - start
  print(json.dumps({"impl": "multibench", "samples_per_s": args.batch * args.steps / seconds,
                    "step_ms": 1000 * seconds / args.steps, "loss": float(loss.detach()),
                    "optimizer": args.optimizer, "threads": torch.get_num_threads(),
                    "torch": torch.__version__}))


if __name__ == "__main__":
  main()
