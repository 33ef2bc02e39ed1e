"""Sequence encoders: real-valued feature sequences `(B, T, D_in)` plus a mask `(B, T)` -> `(B, D)`,
for pre-extracted per-step features such as CMU-MOSI's (text 300-d GloVe, audio 74-d COVAREP,
vision 35-d Facet or 20-d OpenFace, T = 50).

The mask may have any pattern: MulT's released features are left-padded with zeros, other
pipelines pad on the right. Both encoders read only the real steps, in order, so an example gives
the same output however it is padded (tested with left, right and no padding); an example with no
real step (an absent modality) encodes to zeros. A `(B,)` presence mask applies to every step.

The LSTM layer and the transformer stack here are also the text encoders' (`text.py`), which
embed token ids and then run the same code.
"""
from typing import Any, ClassVar, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.layers.masking import as_sequence, masked_mean
from mmjax.layers.transformer import TransformerBlock

Array = jax.Array


def _lstm_bias_init(hidden_dim: int):
  """Zero bias with the forget gate's slice at 1, so early training keeps the cell state."""
  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.zeros(shape, dtype).at[hidden_dim:2 * hidden_dim].set(1.0)
  return init


class LSTMLayer(nn.Module):
  """One LSTM layer over a whole sequence: `(B, T, D)`, mask `(B, T)` -> `(B, T, H)`.

  z_t = x_t W_x + b + h_{t-1} W_h;  [i, f, g, o] = split(z_t)
  c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g);  h_t = σ(o) ⊙ tanh(c_t)

  At a padded step (mask False) (h, c) stay as they were, so the layer reads exactly the real
  steps in order whatever the padding pattern, and its last output is the state after the last
  real step (h_0 = 0 when there is none). The input projection x_t W_x + b has no recurrence, so
  it runs as one `(B·T, D) x (D, 4H)` matmul before the scan; only h_{t-1} W_h stays inside it.
  Parameters: 4H(D + H + 1).
  """
  hidden_dim: int
  unroll: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: Array, mask: Optional[Array] = None) -> Array:
    hidden = self.hidden_dim
    input_gates = nn.Dense(4 * hidden, dtype=self.dtype, bias_init=_lstm_bias_init(hidden),
                           name="input_projection")(inputs)
    recurrent_kernel = self.param("recurrent_kernel", nn.initializers.orthogonal(),
                                  (hidden, 4 * hidden)).astype(self.dtype)
    real = jnp.ones(inputs.shape[:2], bool) if mask is None else mask.astype(bool)

    def step(carry, inputs_t):
      h, c = carry
      gates_t, real_t = inputs_t
      i, f, g, o = jnp.split(gates_t + h @ recurrent_kernel, 4, axis=-1)
      new_c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
      new_h = nn.sigmoid(o) * jnp.tanh(new_c)
      h = jnp.where(real_t[:, None], new_h, h)
      c = jnp.where(real_t[:, None], new_c, c)
      return (h, c), h

    zeros = jnp.zeros((inputs.shape[0], hidden), input_gates.dtype)
    _, outputs = jax.lax.scan(step, (zeros, zeros),
                              (jnp.swapaxes(input_gates, 0, 1), jnp.swapaxes(real, 0, 1)),
                              unroll=self.unroll)
    return jnp.swapaxes(outputs, 0, 1)


def lstm_final_state(x: Array, mask: Optional[Array], *, hidden_dim: int, num_layers: int,
                     unroll: int, dtype: Any) -> Array:
  """Stacked `LSTMLayer`s (named `lstm_<l>` in the calling module) -> `(B, H)`: the top layer's
  state after each sequence's last real step; zeros for a sequence with no real step."""
  for layer in range(num_layers):
    x = LSTMLayer(hidden_dim, unroll=unroll, dtype=dtype, name=f"lstm_{layer}")(x, mask)
  return x[:, -1]


def transformer_mean(x: Array, mask: Array, position_table: Array, *, num_layers: int,
                     num_heads: int, mlp_dim: int, dropout_rate: float, dtype: Any,
                     train: bool) -> Array:
  """`(B, T, D)` embedded inputs, `(B, T)` bool mask -> `(B, D)`: add position embeddings, run
  pre-LN `TransformerBlock`s (named `block_<l>` in the calling module) with padded keys masked,
  a final LayerNorm, then the mean over real steps (zeros when there is none).

  A real step's position is its rank among the real steps (cumsum(mask) − 1), not its index in
  the array, so left padding does not shift the positions: a padded sequence gives the same
  output as the unpadded one, whatever the padded steps hold (NaN included). `position_table` is
  `(max_length, D)`.
  """
  length = x.shape[1]
  if length > position_table.shape[0]:
    raise ValueError(f"sequence length {length} exceeds max_length={position_table.shape[0]}; "
                     "raise the encoder's max_length")
  rank = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
  # Padded steps are zeroed first: masked attention gives them weight 0, but 0 · NaN is NaN, so a
  # NaN or Inf there (e.g. a padding id outside the vocabulary) would still reach real steps.
  x = jnp.where(mask[..., None], x, 0)
  x = (x + position_table[rank]).astype(dtype)
  attention_mask = nn.make_attention_mask(mask, mask)
  for layer in range(num_layers):
    x = TransformerBlock(num_heads, mlp_dim, dropout_rate, dtype, name=f"block_{layer}")(
        x, attention_mask, train=train)
  return masked_mean(nn.LayerNorm(dtype=dtype)(x), mask)


class LSTMSequenceEncoder(nn.Module):
  """Stacked LSTM over the real steps -> the top layer's state after the last real step: `(B, H)`.

  MulT's and MultiBench's unimodal LSTM baselines on CMU-MOSI features; the input goes straight
  into the first layer's input projection (no embedding).
  Parameters: Σ_l 4H(D_l + H + 1), with D_1 = D_in and D_l = H above.
  """
  input_axes: ClassVar[Tuple[str, ...]] = ("B", "T", "D")
  hidden_dim: int = 128
  num_layers: int = 1
  unroll: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: Array, mask: Optional[Array] = None, *,
               train: bool = False) -> Array:
    del train
    x, real = as_sequence(inputs, mask, self.dtype)
    return lstm_final_state(x, real, hidden_dim=self.hidden_dim, num_layers=self.num_layers,
                            unroll=self.unroll, dtype=self.dtype)


class SequenceFeaturesEncoder(nn.Module):
  """The feature sequence itself, padded steps zeroed: `(B, T, D)` -> `(B, T, D)`, for a fusion
  that embeds each modality's sequence itself (MulT's Conv1D projection reads the features as
  the dataset gives them). No parameters."""
  input_axes: ClassVar[Tuple[str, ...]] = ("B", "T", "D")
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: Array, mask: Optional[Array] = None, *,
               train: bool = False) -> Array:
    del train
    x, real = as_sequence(inputs, mask, self.dtype)
    return x * real[..., None].astype(self.dtype)


class TransformerSequenceEncoder(nn.Module):
  """Dense input projection + learned position embeddings (by rank among real steps) -> pre-LN
  transformer -> LayerNorm -> mean over real steps: `(B, model_dim)`.

  The text transformer with a projection `(D_in -> model_dim)` in place of the token embedding.
  Parameters: D_in·d + d + max_length·d + L(4d² + 2d·m + 9d + m) + 2d (d = model_dim, m = mlp_dim).
  """
  input_axes: ClassVar[Tuple[str, ...]] = ("B", "T", "D")
  max_length: int = 512
  model_dim: int = 128
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 256
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: Array, mask: Optional[Array] = None, *,
               train: bool = False) -> Array:
    x, real = as_sequence(inputs, mask, self.dtype)
    x = nn.Dense(self.model_dim, dtype=self.dtype, name="input_projection")(x)
    positions = self.param("position_embedding", nn.initializers.normal(0.02),
                           (self.max_length, self.model_dim))
    return transformer_mean(x, real, positions, num_layers=self.num_layers,
                            num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                            dropout_rate=self.dropout_rate, dtype=self.dtype, train=train)
