"""The optimizer from config: AdamW's decoupled weight decay reaches the parameters its mask names
(open_clip's rule by default: no biases, norms or scalars)."""
import jax
import jax.numpy as jnp
import pytest

from mmjax.model import encoder_config, fusion_config, head_config, model_from_config
from mmjax.tasks import task_config
from mmjax.train.defaults import trainer_config
from mmjax.train.state import decays, make_optimizer


def decayed_after_one_step(mask):
  """`{path: whether the parameter moved}` after one AdamW step with zero gradients (so only the
  decay moves anything), for a model with kernels, biases, a LayerNorm, an embedding table and
  the contrastive head's scalars."""
  config = trainer_config("synthetic")
  config.optimizer.update(learning_rate=1.0, warmup_steps=0, final_lr_fraction=1.0,
                          weight_decay=0.1, weight_decay_mask=mask)
  model = model_from_config(
      {"encoders": {"text": encoder_config("transformer", vocab_size=10, model_dim=8,
                                           num_layers=1, num_heads=2, mlp_dim=8, max_length=4),
                    "x": encoder_config("mlp", hidden_dims=(4,), dim=8)},
       "fusion": fusion_config("concat"),
       "heads": {"pair": head_config("contrastive", modalities=("text", "x"), embed_dim=4)}},
      {"pair": task_config("contrastive", loss="siglip")})
  batch = {"text": jnp.ones((2, 4), jnp.int32), "x": jnp.ones((2, 3))}
  # Ones, so that a decay moves every parameter it reaches (biases start at zero).
  params = jax.tree.map(jnp.ones_like, model.init(jax.random.key(0), batch)["params"])
  tx, _ = make_optimizer(config.optimizer, 10)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  return {jax.tree_util.keystr(path, simple=True, separator="/"): bool(jnp.any(update != 0))
          for path, update in jax.tree_util.tree_leaves_with_path(updates)}


def test_weight_decay_skips_biases_norms_and_scalars_by_default():
  """Bug caught: AdamW decaying every parameter, the contrastive temperature and SigLIP's bias
  included (open_clip excludes them)."""
  moved = decayed_after_one_step("matrices")
  assert moved["heads_pair/log_scale"] is False and moved["heads_pair/bias"] is False
  kernels = [p for p in moved if p.endswith("kernel") or p.endswith("embedding")]
  others = [p for p in moved if p.endswith("bias") or p.endswith("scale")]
  assert len(kernels) >= 4 and len(others) >= 4
  assert all(moved[p] for p in kernels), {p: moved[p] for p in kernels}
  assert not any(moved[p] for p in others), {p: moved[p] for p in others}


def test_class_tokens_are_not_decayed_whatever_their_shape():
  """ViT's cls_token is (1, 1, D); open_clip's class_embedding, (D,), is excluded by its rank."""
  assert not decays("encoders_image/cls_token", jnp.zeros((1, 1, 8)))
  assert not decays("fusion/text_cls", jnp.zeros((8,)))
  assert decays("encoders_image/patch_embedding/kernel", jnp.zeros((4, 4, 3, 8)))
  assert decays("encoders_image/cls_token", jnp.zeros((1, 1, 8)), "all")


def test_weight_decay_mask_all_decays_every_parameter():
  assert all(decayed_after_one_step("all").values())


def test_an_unknown_weight_decay_mask_is_one_line():
  config = trainer_config("synthetic")
  config.optimizer.weight_decay_mask = "most"
  with pytest.raises(ValueError, match="weight_decay_mask='most'; use one of matrices, all"):
    make_optimizer(config.optimizer, 10)
