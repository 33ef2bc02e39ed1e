"""Text encoders: token ids `(B, T)` int32 plus an optional padding mask `(B, T)` -> features `(B, D)`.

`mask[b, t]` is True for real tokens; padding is usually on the right, but both encoders read only
the real tokens, in order (the code is `sequence.py`'s), so any pattern gives the output of the
unpadded sequence. An example with no real token (an absent modality) encodes to zeros
(`mmjax/layers/masking.py`). Either encoder can start from pretrained word vectors
(`embedding_path`, `word_vectors.py`) and keep them fixed (`freeze_embedding`).
"""
from typing import Any, ClassVar, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.linear import default_embed_init

from mmjax.encoders.sequence import lstm_final_state, transformer_mean
from mmjax.encoders.word_vectors import pretrained_init

Array = jax.Array


def embed_tokens(tokens: Array, vocab_size: int, dim: int, embedding_path: Optional[str],
                 freeze: bool) -> Array:
  """The token embedding (`embedding` in the calling module): `(B, T)` ids -> `(B, T, dim)`,
  initialised from the `(vocab_size, dim)` table saved at `embedding_path` when one is given
  (`mmjax/encoders/word_vectors.py`). `freeze` stops its gradient, so the optimizer leaves it
  as it is; AdamW's decoupled weight decay would still shrink it, so with weight_decay > 0 freeze
  it through `config.optimizer.frozen` (a regex such as "embedding") instead.

  An id outside [0, vocab_size) embeds to NaN, so under jit a bad id at a real position reaches
  the loss and the step's non-finite check (`MultimodalModel` rejects concrete bad ids with a
  DataError before this)."""
  init = pretrained_init(embedding_path) if embedding_path else default_embed_init
  in_vocab = (tokens >= 0) & (tokens < vocab_size)
  # A plain lookup would wrap a negative id around to a real row: a finite, wrong embedding.
  x = nn.Embed(vocab_size, dim, embedding_init=init, name="embedding")(
      jnp.where(in_vocab, tokens, 0))
  x = jnp.where(in_vocab[..., None], x, jnp.nan)
  return jax.lax.stop_gradient(x) if freeze else x


class LSTMTextEncoder(nn.Module):
  """Token embedding -> stacked LSTM -> the top layer's state after each sequence's last real token.

  Padded steps leave the LSTM state unchanged (`sequence.LSTMLayer`), so padding cannot change
  the result; a sequence with no real token gives the initial state h_0 = 0.
  Parameters: V·E + Σ_l 4H(D_l + H + 1), with D_1 = E and D_l = H above.
  """
  input_axes: ClassVar[Tuple[str, ...]] = ("B", "T")
  vocab_size: int
  embed_dim: int = 100
  hidden_dim: int = 256
  num_layers: int = 2
  unroll: int = 1
  embedding_path: Optional[str] = None
  freeze_embedding: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: Array, mask: Optional[Array] = None, *, train: bool = False) -> Array:
    del train
    x = embed_tokens(tokens, self.vocab_size, self.embed_dim, self.embedding_path,
                     self.freeze_embedding).astype(self.dtype)
    return lstm_final_state(x, mask, hidden_dim=self.hidden_dim, num_layers=self.num_layers,
                            unroll=self.unroll, dtype=self.dtype)


class TransformerTextEncoder(nn.Module):
  """Token + learned position embeddings -> pre-LN transformer -> mean over real tokens: `(B, D)`.

  Padded keys are masked out of every attention, and the pooling averages real tokens only, so
  padding tokens cannot change the output; a sequence with no real token gives zeros. The stack
  is `sequence.transformer_mean`, shared with the feature-sequence transformer.
  """
  input_axes: ClassVar[Tuple[str, ...]] = ("B", "T")
  vocab_size: int
  max_length: int = 512
  model_dim: int = 128
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 256
  dropout_rate: float = 0.0
  embedding_path: Optional[str] = None
  freeze_embedding: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: Array, mask: Optional[Array] = None, *, train: bool = False) -> Array:
    mask = jnp.ones(tokens.shape, bool) if mask is None else mask.astype(bool)
    x = embed_tokens(tokens, self.vocab_size, self.model_dim, self.embedding_path,
                     self.freeze_embedding)
    positions = self.param("position_embedding", nn.initializers.normal(0.02),
                           (self.max_length, self.model_dim))
    return transformer_mean(x, mask, positions, num_layers=self.num_layers,
                            num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                            dropout_rate=self.dropout_rate, dtype=self.dtype, train=train)
