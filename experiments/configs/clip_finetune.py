"""Fine-tuning a pretrained CLIP or SigLIP on your own image-text folder, with zero-shot
classification and whole-split retrieval as its evaluations.

    mmjax train --config experiments/configs/clip_finetune.py:/path/to/clip-vit-base-patch32 \
        --config.dataset.manual_dir=/path/to/folder --workdir runs/clip

The argument is a local checkpoint folder in the Hugging Face layout (`config.json`,
`model.safetensors`, `tokenizer.json`, `preprocessor_config.json`: download one once, e.g.
`huggingface-cli download openai/clip-vit-base-patch32 --local-dir DIR`); its `model_type`
(`clip` or `siglip`) picks the towers and the loss (InfoNCE or the sigmoid loss). Append `,COLUMN`
to name the class column zero-shot classifies (default `label`). The folder is a
`multimodal_folder` (mmjax/data/multimodal_folder.py) with an `image` and a `text` (caption)
column and that class column; its images and captions go through the checkpoint's own image
processor and tokenizer. SigLIP checkpoints need a tokenizer.json (see docs/pretrained.md).

Both towers start locked except their last two layers (and what follows them: final norms,
projections), with a layer-wise learning-rate decay of 0.75 below the output side; the
contrastive head reads the towers' own projections and starts from the checkpoint's logit
scale (and SigLIP's bias).
"""
import ml_collections

from mmjax.evaluators import evaluator_config
from mmjax.model import encoder_config, fusion_config, head_config
from mmjax.pretrained.files import read_config
from mmjax.tasks import task_config
from mmjax.train.defaults import trainer_config
from mmjax.train.finetune import finetune_config

TOWERS = {"clip": ("clip_vision", "clip_text", "infonce"),
          "siglip": ("siglip_vision", "siglip_text", "siglip")}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """`arg` = CHECKPOINT[,COLUMN]. Without one (`--help`, the docs' checks) the CLIP config with
  every checkpoint field unset: the towers then take their architecture from the checkpoint
  the command line gives them."""
  checkpoint, _, label = arg.partition(",")
  model_type = read_config(checkpoint)["model_type"] if checkpoint else "clip"
  checkpoint = checkpoint or None
  if model_type not in TOWERS:
    raise ValueError(f"{checkpoint} is a {model_type!r} checkpoint; this config fine-tunes "
                     f"{' or '.join(TOWERS)}")
  vision, text, loss = TOWERS[model_type]
  config = trainer_config("multimodal_folder")
  config.dataset.options = ml_collections.ConfigDict(
      {"tokenizer": checkpoint or "", "image_processor": checkpoint or ""})
  config.model.encoders = ml_collections.ConfigDict({
      "image": encoder_config(vision, checkpoint=checkpoint),
      "text": encoder_config(text, checkpoint=checkpoint)})
  config.model.fusion = fusion_config("concat")     # no head reads it: the model is contrastive
  embed_dim = config.model.encoders.text.get("projection_dim") or 512
  config.model.heads = ml_collections.ConfigDict({
      "pair": head_config("contrastive", modalities=("text", "image"), project=False,
                          checkpoint=checkpoint, embed_dim=embed_dim)})
  config.tasks = ml_collections.ConfigDict({"pair": task_config("contrastive", loss=loss)})
  for modality in ("image", "text"):
    config.finetune[modality] = finetune_config(lock=True, unlock_last_blocks=2,
                                                layer_decay=0.75)

  config.evals = ml_collections.ConfigDict({
      "validation": evaluator_config("metrics", split="validation", every_steps=250),
      "retrieval": evaluator_config("retrieval", split="validation", every_steps=250),
      "zero_shot": evaluator_config("zero_shot", split="validation", every_steps=250,
                                    label=label or "label")})
  config.checkpoint.best_metric = "retrieval/a_to_b/R@5"
  config.batch_size = 128
  config.eval_batch_size = 256
  config.total_steps = 1000
  config.optimizer.learning_rate = 1e-5
  config.optimizer.warmup_steps = 100
  config.optimizer.weight_decay = 0.1
  return config
