"""AV-MNIST with MultiBench's LeNet encoders: `--config=experiments/configs/av_mnist.py:VARIANT`.

VARIANT is `image` or `audio` (one modality), or a fusion of both: `concat` (MultiBench's "late
fusion": the encoders' features concatenated, then the MLP head), `late` (per-modality
projections averaged), `tensor` (TFN) or `low_rank` (LMF). Add `,multibench` to read MultiBench's
released `avmnist` folder instead of building the dataset from MNIST + FSDD (`av_mnist/sources`):

    mmjax train --config experiments/configs/av_mnist.py:low_rank --workdir runs/avmnist_lmf \
        --config.dataset.manual_dir=PATH   # holding mnist/ and fsdd/recordings/ (see docs/data.md)

Encoders as MultiBench's AV-MNIST examples: image LeNet(1, 6, 3) -> 48 features, audio
LeNet(1, 6, 5) -> 192 (GroupNorm in place of BatchNorm); head MLP(·, 100, 10). Adam in place of
their SGD, for a CPU budget of minutes.
"""
import ml_collections

from mmjax.model import encoder_config, fusion_config, head_config
from mmjax.tasks import task_config
from mmjax.train.defaults import trainer_config

ENCODERS = {"image": dict(channels=6, num_layers=3), "audio": dict(channels=6, num_layers=5)}
FUSIONS = {"concat": {}, "late": {"dim": 64}, "tensor": {}, "low_rank": {"dim": 64, "rank": 8}}


def get_config(arg: str = "low_rank") -> ml_collections.ConfigDict:
  variant, _, source = arg.partition(",")
  if variant not in (*ENCODERS, *FUSIONS):
    raise ValueError(f"unknown AV-MNIST variant {variant!r}; use one of "
                     f"{', '.join((*ENCODERS, *FUSIONS))}")
  config = trainer_config(f"av_mnist/{source or 'sources'}")
  modalities = [variant] if variant in ENCODERS else list(ENCODERS)
  config.model.encoders = ml_collections.ConfigDict(
      {m: encoder_config("lenet", **ENCODERS[m]) for m in modalities})
  config.model.fusion = fusion_config("concat" if variant in ENCODERS else variant,
                                      **FUSIONS.get(variant, {}))
  config.model.heads = ml_collections.ConfigDict()
  config.model.heads.label = head_config("mlp", num_classes=10, hidden_dims=(100,))
  config.tasks = ml_collections.ConfigDict()
  config.tasks.label = task_config("classification")

  config.batch_size = 64
  config.eval_batch_size = 500
  config.total_steps = 1000              # 8 epochs of the 8,000 sources digits: minutes on a CPU
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 100
  config.log_every_steps = 100
  config.evals.validation.every_steps = 250
  config.checkpoint_every_steps = 250
  config.checkpoint.keep_best = 1
  return config
