"""BERT (Devlin et al., 2019) and RoBERTa (Liu et al., 2019) text encoders, as transformers'
`BertModel` and `RobertaModel` compute them.

x = LN_emb(E_tok[ids] + E_type[token_types] + E_pos[positions]), h = Encoder(x, padding mask)
with post-LN layers (x = LN(x + Attn(x)); x = LN(x + MLP(x)), exact GELU),
last_hidden_state = h, pooler_output = tanh(W_p h[:, 0] + b_p).
BERT's positions are 0..T−1; RoBERTa's count real tokens from `pad_token_id + 1` and give
padding `pad_token_id` (fairseq's `make_positions`): position_t = (cumsum_t(ids ≠ pad) + pad)
where ids ≠ pad, else pad. Token types are 0 unless given (mmjax's batches have one segment).

Name table (optional prefix `bert.` / `roberta.`, as in a `...ForSequenceClassification`):
    embeddings.{word,position,token_type}_embeddings.weight   {word,position,token_type}_embedding
    embeddings.LayerNorm.*                                    embedding_norm
    encoder.layer.{i}.attention.self.{query,key,value}.*      encoder/layer_{i}/attention/…
    encoder.layer.{i}.attention.output.dense.*                encoder/layer_{i}/attention/out
    encoder.layer.{i}.attention.output.LayerNorm.*            encoder/layer_{i}/norm1
    encoder.layer.{i}.intermediate.dense.*                    encoder/layer_{i}/mlp/fc1
    encoder.layer.{i}.output.dense.*                          encoder/layer_{i}/mlp/fc2
    encoder.layer.{i}.output.LayerNorm.*                      encoder/layer_{i}/norm2
    pooler.dense.*                                            pooler
"""
from typing import Any, ClassVar, Dict, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.pretrained import loading
from mmjax.pretrained.blocks import Tower, required
from mmjax.pretrained.clip import causal_padding_mask, encoder_fields
from mmjax.pretrained.files import Tensors
from mmjax.pretrained.loading import Source

Array = jax.Array
_init = nn.initializers.normal(0.02)


def bert_layer_table(flax_prefix: str, reference: str) -> Dict[str, Source]:
  """One BERT/RoBERTa (and ViT/AST, see vit.py) layer, `encoder.layer.{i}`."""
  table = {}
  for name in ("query", "key", "value"):
    table.update(loading.dense(f"{flax_prefix}/attention/{name}",
                               f"{reference}.attention.self.{name}"))
  table.update(loading.dense(f"{flax_prefix}/attention/out", f"{reference}.attention.output.dense"))
  table.update(loading.layer_norm(f"{flax_prefix}/norm1", f"{reference}.attention.output.LayerNorm"))
  table.update(loading.dense(f"{flax_prefix}/mlp/fc1", f"{reference}.intermediate.dense"))
  table.update(loading.dense(f"{flax_prefix}/mlp/fc2", f"{reference}.output.dense"))
  table.update(loading.layer_norm(f"{flax_prefix}/norm2", f"{reference}.output.LayerNorm"))
  return table


class BertText(Tower):
  """BERT or RoBERTa (`positions`: `absolute` from 0, or `padding_offset` as RoBERTa's): token
  ids `(B, T)` with their mask -> `outputs`; as an encoder, `features` `pooler_output` (the
  default; `cls` and `mean` pool `last_hidden_state`)."""
  vocab_size: Optional[int] = None
  max_positions: Optional[int] = None
  type_vocab_size: Optional[int] = None
  positions: Optional[str] = None
  pad_token_id: Optional[int] = None
  use_pooler: bool = True
  features: str = "pooler_output"

  input_axes: ClassVar = ("B", "T")
  MODEL_TYPES: ClassVar = ("bert", "roberta")
  PREFIXES: ClassVar = ("", "bert.", "roberta.")
  INPUT_SIDE: ClassVar = ("word_embedding", "position_embedding", "token_type_embedding",
                          "embedding_norm")

  @staticmethod
  def config_fields(config: Mapping[str, Any]) -> Dict[str, Any]:
    return dict(encoder_fields(config), vocab_size=config["vocab_size"],
                max_positions=config["max_position_embeddings"],
                type_vocab_size=config["type_vocab_size"], pad_token_id=config["pad_token_id"],
                positions="padding_offset" if config["model_type"] == "roberta" else "absolute",
                dropout_rate=config.get("hidden_dropout_prob", 0.0),
                attention_dropout_rate=config.get("attention_probs_dropout_prob", 0.0))

  def position_ids(self, ids: Array) -> Array:
    if self.positions == "absolute":
      return jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
    if self.positions == "padding_offset":
      real = (ids != self.pad_token_id).astype(jnp.int32)
      return jnp.cumsum(real, axis=1) * real + self.pad_token_id
    raise ValueError(f"positions={self.positions!r}; use absolute (BERT) or padding_offset "
                     "(RoBERTa)")

  @nn.compact
  def outputs(self, ids: Array, mask: Optional[Array] = None, *, train: bool = False,
              token_type_ids: Optional[Array] = None) -> Dict[str, Any]:
    required(self, "vocab_size", "max_positions", "type_vocab_size", "positions", "pad_token_id")
    embed = lambda count, name: nn.Embed(count, self.hidden_size, embedding_init=_init,
                                         dtype=self.dtype, name=name)
    types = jnp.zeros_like(ids) if token_type_ids is None else token_type_ids
    x = (embed(self.vocab_size, "word_embedding")(ids)
         + embed(self.type_vocab_size, "token_type_embedding")(types)
         + embed(self.max_positions, "position_embedding")(self.position_ids(ids)))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(self.norm("embedding_norm")(x))
    last, hidden = self.encoder(pre_norm=False)(x, causal_padding_mask(mask, ids.shape[1], False),
                                                train)
    out = {"last_hidden_state": last, "hidden_states": hidden}
    if self.use_pooler:
      out["pooler_output"] = self.tanh_pooler(last)
    return out

  def pretrained_table(self, tensors: Tensors, directory: str) -> Dict[str, Source]:
    root = loading.prefix(tensors, self.PREFIXES, "embeddings.word_embeddings.weight", directory)
    table = {
        "word_embedding/embedding": Source(f"{root}embeddings.word_embeddings.weight"),
        "position_embedding/embedding": Source(f"{root}embeddings.position_embeddings.weight"),
        "token_type_embedding/embedding": Source(f"{root}embeddings.token_type_embeddings.weight"),
        **loading.layer_norm("embedding_norm", f"{root}embeddings.LayerNorm"),
        **loading.optional_dense("pooler", f"{root}pooler.dense", tensors, self.use_pooler),
    }
    table.update(loading.stacked_layers("encoder", f"{root}encoder.layer.{{i}}", self.num_layers,
                                        self.scan, bert_layer_table))
    return table
