"""Text encoders: token ids `(B, T)` int32 plus an optional padding mask `(B, T)` -> features `(B, D)`.

Padding is on the right: `mask[b, t]` is True for real tokens, and real tokens form a prefix. An
example with no real token (an absent modality) encodes to zeros (`mmjax/layers/masking.py`).
"""
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.layers.masking import last_real_token, masked_mean
from mmjax.layers.transformer import TransformerBlock

Array = jax.Array


def _lstm_bias_init(hidden_dim: int):
  """Zero bias with the forget gate's slice at 1, so early training keeps the cell state."""
  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.zeros(shape, dtype).at[hidden_dim:2 * hidden_dim].set(1.0)
  return init


class LSTMLayer(nn.Module):
  """One LSTM layer over a whole sequence: `(B, T, D) -> (B, T, H)`.

  z_t = x_t W_x + b + h_{t-1} W_h;  [i, f, g, o] = split(z_t)
  c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g);  h_t = σ(o) ⊙ tanh(c_t)

  The input projection x_t W_x + b has no recurrence, so it runs as one `(B·T, D) x (D, 4H)`
  matmul before the scan; only h_{t-1} W_h stays inside it.
  Parameters: 4H(D + H + 1).
  """
  hidden_dim: int
  unroll: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    hidden = self.hidden_dim
    input_gates = nn.Dense(4 * hidden, dtype=self.dtype, bias_init=_lstm_bias_init(hidden),
                           name="input_projection")(inputs)
    recurrent_kernel = self.param("recurrent_kernel", nn.initializers.orthogonal(),
                                  (hidden, 4 * hidden)).astype(self.dtype)

    def step(carry, gates_t):
      h, c = carry
      z = gates_t + h @ recurrent_kernel
      i, f, g, o = jnp.split(z, 4, axis=-1)
      c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
      h = nn.sigmoid(o) * jnp.tanh(c)
      return (h, c), h

    batch = inputs.shape[0]
    zeros = jnp.zeros((batch, hidden), input_gates.dtype)
    _, outputs = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(input_gates, 0, 1),
                              unroll=self.unroll)
    return jnp.swapaxes(outputs, 0, 1)


class LSTMTextEncoder(nn.Module):
  """Token embedding -> stacked LSTM -> the top layer's hidden state at each sequence's last real token.

  The LSTM is causal, so right padding after the last real token cannot change the result; a
  sequence with no real token gives the initial state h_0 = 0.
  Parameters: V·E + Σ_l 4H(D_l + H + 1), with D_1 = E and D_l = H above.
  """
  vocab_size: int
  embed_dim: int = 100
  hidden_dim: int = 256
  num_layers: int = 2
  unroll: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: Array, mask: Optional[Array] = None, *, train: bool = False) -> Array:
    del train
    x = nn.Embed(self.vocab_size, self.embed_dim, name="embedding")(tokens).astype(self.dtype)
    for layer in range(self.num_layers):
      x = LSTMLayer(self.hidden_dim, unroll=self.unroll, dtype=self.dtype, name=f"lstm_{layer}")(x)
    return last_real_token(x, mask)


class TransformerTextEncoder(nn.Module):
  """Token + learned position embeddings -> pre-LN transformer -> mean over real tokens: `(B, D)`.

  Padded keys are masked out of every attention, and the pooling averages real tokens only, so
  padding tokens cannot change the output; a sequence with no real token gives zeros.
  """
  vocab_size: int
  max_length: int = 512
  model_dim: int = 128
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 256
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: Array, mask: Optional[Array] = None, *, train: bool = False) -> Array:
    _, length = tokens.shape
    if length > self.max_length:
      raise ValueError(f"text length {length} exceeds max_length={self.max_length}; "
                       "raise the text encoder's max_length")
    if mask is None:
      mask = jnp.ones(tokens.shape, bool)
    x = nn.Embed(self.vocab_size, self.model_dim, name="embedding")(tokens)
    positions = self.param("position_embedding", nn.initializers.normal(0.02),
                           (self.max_length, self.model_dim))
    x = (x + positions[:length]).astype(self.dtype)
    attention_mask = nn.make_attention_mask(mask, mask)
    for layer in range(self.num_layers):
      x = TransformerBlock(self.num_heads, self.mlp_dim, self.dropout_rate, self.dtype,
                           name=f"block_{layer}")(x, attention_mask, train=train)
    x = nn.LayerNorm(dtype=self.dtype)(x)
    return masked_mean(x, mask.astype(bool))
