"""AV-MNIST with MultiBench's LeNet encoders: `--config=experiments/configs/av_mnist.py:VARIANT`.

VARIANT is `image` or `audio` (one modality), or a fusion of both: `concat` (MultiBench's "late
fusion": the encoders' features concatenated, then the MLP head), `late` (per-modality
projections averaged), `tensor` (TFN) or `low_rank` (LMF). Options follow, comma-separated:
`multibench` reads MultiBench's released `avmnist` folder instead of building the dataset from
MNIST + FSDD (`av_mnist/sources`); `dropout` trains a fusion with modality dropout (half the
examples with both modalities, a quarter with each alone: `mmjax/modalities.py`); `ogm_ge`
balances it with OGM-GE at its default settings (`mmjax/balancing/ogm_ge.py`); `gradient_blend`
adds a linear classifier on each encoder's features (tasks `label_audio`, `label_image`) and
weights the three losses by Gradient-Blending, estimated every 250 steps on the first 8% of the
train split, held out from training (`gradient_blend` in `mmjax/tasks/weighting.py`):

    mmjax train --config experiments/configs/av_mnist.py:low_rank --workdir runs/avmnist_lmf \
        --config.dataset.manual_dir=PATH   # holding mnist/ and fsdd/recordings/ (see docs/data.md)

Encoders as MultiBench's AV-MNIST examples: image LeNet(1, 6, 3) -> 48 features, audio
LeNet(1, 6, 5) -> 192 (GroupNorm in place of BatchNorm); head MLP(·, 100, 10). Adam in place of
their SGD, for a CPU budget of minutes. Besides validation and test accuracy, a fusion reports the
test accuracy with only each subset of the modalities present (`subsets`) and, at every
validation, a linear probe on each encoder's features (`probe_<modality>`: how much each modality
has learned inside the fused model).
"""
import ml_collections

from mmjax.balancing import balancing_config
from mmjax.evaluators import evaluator_config
from mmjax.model import encoder_config, fusion_config, head_config
from mmjax.tasks import task_config, weighting_config
from mmjax.train.defaults import trainer_config

ENCODERS = {"image": dict(channels=6, num_layers=3), "audio": dict(channels=6, num_layers=5)}
FUSIONS = {"concat": {}, "late": {"dim": 64}, "tensor": {}, "low_rank": {"dim": 64, "rank": 8}}


SOURCES = ("sources", "multibench")
TRAINING = ("dropout", "ogm_ge", "gradient_blend")


def get_config(arg: str = "low_rank") -> ml_collections.ConfigDict:
  variant, *options = arg.split(",")
  if variant not in (*ENCODERS, *FUSIONS):
    raise ValueError(f"unknown AV-MNIST variant {variant!r}; use one of "
                     f"{', '.join((*ENCODERS, *FUSIONS))}")
  unknown = [o for o in options if o not in (*SOURCES, *TRAINING)]
  if unknown or (variant in ENCODERS and set(options) & set(TRAINING)):
    raise ValueError(f"AV-MNIST option {(unknown or options)[0]!r}: use {', '.join(SOURCES)}, and "
                     f"for a fusion {', '.join(TRAINING)}")
  source = next((o for o in options if o in SOURCES), "sources")
  config = trainer_config(f"av_mnist/{source}")
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
  config.evals.update({f"probe_{m}": evaluator_config(
      "linear_probe", split="test", every_steps=250, features=m, train_examples=2000)
                       for m in modalities})
  if len(modalities) > 1:
    config.evals.subsets = evaluator_config("modality_subsets", split="test")
  if "dropout" in options:
    config.modality_dropout.subsets = ml_collections.ConfigDict(
        {"audio+image": 0.5, "audio": 0.25, "image": 0.25})
  if "ogm_ge" in options:
    config.balancing = balancing_config("ogm_ge")
  if "gradient_blend" in options:
    for m in modalities:
      config.model.heads[f"label_{m}"] = head_config("unimodal", modality=m, num_classes=10)
      config.tasks[f"label_{m}"] = task_config("classification", label_key="label",
                                                modality=m)
    config.task_weighting = weighting_config("gradient_blend", period_steps=250,
                                             heldout_split="train[:8%]")
    config.dataset.train_split = "train[8%:]"

  return config
