"""MM-IMDb genre classification (23 genres, multi-label) from the plots and posters through
pretrained towers: a BERT (or RoBERTa) text tower and a ViT or CLIP image tower, fused by
concatenation, GMU or late fusion.

    python experiments/pretrained/mmimdb_folder.py /path/to/mmimdb
    mmjax train --config experiments/configs/mm_imdb_pretrained.py:TEXT_DIR,IMAGE_DIR,gmu \
        --config.dataset.manual_dir=/path/to/mmimdb --workdir runs/imdb_bert_vit_gmu

`TEXT_DIR` and `IMAGE_DIR` are local checkpoint folders (e.g. `bert-base-uncased`,
`google/vit-base-patch16-224-in21k` or `openai/clip-vit-base-patch32`); the last field is the
fusion (`concat`, `gmu`, `late`). The folder is the original release converted by
`mmimdb_folder.py` (plots, posters, the release's train / dev / test split): the captions go
through the text tower's tokenizer (256 tokens), the posters through the image tower's processor.
Features: BERT's pooled output, ViT's class token or CLIP's projected image embedding, each
fine-tuned with a layer-wise decay of 0.75 (no layer locked). Metrics as `mm_imdb.py`: micro and
macro F1 at 0.5, mean average precision. MMBT's (Kiela et al. 2019, arXiv:1909.02950) BERT +
ResNet-152 numbers are the published ones for such settings; they are not yet in
`experiments/reference_results.json`, because the paper's table could not be read to check them.
"""
import ml_collections

from mmjax.model import encoder_config, fusion_config, head_config
from mmjax.pretrained.files import read_config
from mmjax.tasks import task_config
from mmjax.train.defaults import trainer_config
from mmjax.train.finetune import finetune_config

FUSIONS = {"concat": {}, "gmu": {"dim": 512}, "late": {"dim": 512}}
IMAGE_TOWERS = {"vit": ("vit_pretrained", "cls"), "clip": ("clip_vision", "image_embeds")}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """`arg` = TEXT_DIR,IMAGE_DIR,FUSION; without one (`--help`, the docs' checks) BERT + ViT with
  GMU and the checkpoint fields unset, for the command line to give."""
  text_dir, image_dir, fusion = (arg.split(",") + ["", "", ""])[:3] if arg else ("", "", "gmu")
  fusion = fusion or "gmu"
  if fusion not in FUSIONS:
    raise ValueError(f"unknown fusion {fusion!r}; use one of {', '.join(FUSIONS)}")
  image_type = read_config(image_dir)["model_type"] if image_dir else "vit"
  if image_type not in IMAGE_TOWERS:
    raise ValueError(f"{image_dir} is a {image_type!r} checkpoint; the image tower is one of "
                     f"{', '.join(IMAGE_TOWERS)}")
  image_encoder, image_features = IMAGE_TOWERS[image_type]
  config = trainer_config("multimodal_folder")
  config.dataset.options = ml_collections.ConfigDict(
      {"tokenizer": text_dir, "tokenizer_max_length": 256, "image_processor": image_dir})
  config.model.encoders = ml_collections.ConfigDict({
      "text": encoder_config("bert", checkpoint=text_dir or None),
      "image": encoder_config(image_encoder, checkpoint=image_dir or None,
                              features=image_features)})
  config.model.fusion = fusion_config(fusion, **FUSIONS[fusion])
  config.model.heads = ml_collections.ConfigDict({"genres": head_config("linear",
                                                                        num_classes=23)})
  config.tasks = ml_collections.ConfigDict({"genres": task_config("multilabel")})
  for modality in ("text", "image"):
    config.finetune[modality] = finetune_config(layer_decay=0.75)

  config.batch_size = 32
  config.eval_batch_size = 128
  config.total_steps = 5000
  config.optimizer.learning_rate = 5e-5
  config.optimizer.warmup_steps = 500
  config.optimizer.weight_decay = 0.01
  config.log_every_steps = 100
  config.evals.validation.every_steps = 500
  config.checkpoint_every_steps = 500
  config.checkpoint.best_metric = "validation/genres/micro_f1"
  config.checkpoint.keep_best = 1
  return config
