"""The transformer pieces every pretrained tower is made of, following the reference
implementations (Hugging Face transformers' PyTorch models) exactly where they differ from
mmjax's own blocks (`mmjax/layers/transformer.py`): a chosen activation (CLIP's quick-GELU,
BERT's exact GELU, SigLIP's tanh GELU), a layer-norm epsilon, pre-LN or post-LN, optional q/k/v
biases, softmax over finfo.min-masked logits in float32.

    pre-LN  (CLIP, SigLIP, ViT, AST):  x = x + Attn(LN₁(x));  x = x + MLP(LN₂(x))
    post-LN (BERT, RoBERTa):           x = LN₁(x + Attn(x));  x = LN₂(x + MLP(x))
    Attn(x) = concat_h softmax(q_h k_hᵀ / √d_h + m) v_h · W_o + b_o,  MLP(x) = W₂ act(W₁ x + b₁) + b₂

`Encoder` stacks the layers, optionally rematerialised (`remat`: a `jax.checkpoint_policies`
choice) and/or as one `nn.scan` over identical layers (parameters stacked on a leading layer
axis: `layers/layer/...` instead of `layer_0/...`, `layer_1/...`; the loader fills either).
"""
import functools
from typing import Any, ClassVar, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax import registry
from mmjax.layers.masking import masked_mean, zero_absent

Array = jax.Array


def quick_gelu(x: Array) -> Array:
  """CLIP's x·σ(1.702x)."""
  return x * jax.nn.sigmoid(1.702 * x)


# config.json's `hidden_act` names (transformers' ACT2FN) -> functions.
ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "quick_gelu": quick_gelu,
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
}

# `remat` field values -> jax.checkpoint policies (None: no rematerialisation).
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}

# `attention` field values: "plain" is the reference's einsum-softmax-einsum; the others call
# `jax.nn.dot_product_attention` (XLA's, cuDNN's fused kernel, or whichever JAX picks).
ATTENTION_IMPLEMENTATIONS = ("plain", "xla", "cudnn", "auto")


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ValueError(f"{name}={value!r}; use one of {', '.join(choices)}")


class Attention(nn.Module):
  """Multi-head attention `(B, T_q, D)`, `(B, T_k, D)`, mask `(B, 1, T_q, T_k)` bool (True:
  attend) or None -> `(B, T_q, D)`, with the parameters `query`, `key`, `value`, `out` (Dense
  layers, `use_bias` = `qkv_bias` for the first three). Dropout on the attention weights needs
  the plain path, which training with `attention_dropout_rate` > 0 takes."""
  num_heads: int
  qkv_bias: bool = True
  attention_dropout_rate: float = 0.0
  implementation: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, queries: Array, keys: Array, mask: Optional[Array], *,
               train: bool = False) -> Array:
    width = queries.shape[-1]
    if width % self.num_heads:
      raise ValueError(f"hidden size {width} is not divisible by num_heads={self.num_heads}")
    head_dim = width // self.num_heads
    project = lambda name, bias, x: nn.Dense(width, use_bias=bias, dtype=self.dtype, name=name)(
        x).reshape(x.shape[:-1] + (self.num_heads, head_dim))
    q = project("query", self.qkv_bias, queries)
    k = project("key", self.qkv_bias, keys)
    v = project("value", self.qkv_bias, keys)
    dropout = train and self.attention_dropout_rate > 0
    if self.implementation == "plain" or dropout:
      logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * head_dim ** -0.5
      if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
      weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
      weights = nn.Dropout(self.attention_dropout_rate, deterministic=not dropout)(weights)
      attended = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    else:
      attended = jax.nn.dot_product_attention(
          q, k, v, mask=mask, scale=head_dim ** -0.5,
          implementation=None if self.implementation == "auto" else self.implementation)
    attended = attended.reshape(attended.shape[:-2] + (width,))
    return nn.Dense(width, dtype=self.dtype, name="out")(attended)


class MLP(nn.Module):
  """W₂ act(W₁ x + b₁) + b₂, parameters `fc1`, `fc2`."""
  mlp_dim: int
  activation: str = "gelu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    hidden = ACTIVATIONS[self.activation](nn.Dense(self.mlp_dim, dtype=self.dtype, name="fc1")(x))
    return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(hidden)


class EncoderLayer(nn.Module):
  """One pre-LN or post-LN transformer layer (module docstring); parameters `attention`, `mlp`,
  `norm1` (before attention, or after it when post-LN), `norm2`. Dropout (`dropout_rate`) on both
  residual branches, as the references' hidden dropout."""
  num_heads: int
  mlp_dim: int
  activation: str = "gelu"
  layer_norm_eps: float = 1e-5
  pre_norm: bool = True
  qkv_bias: bool = True
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  attention: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array], train: bool = False) -> Array:
    norm = lambda name: nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name=name)
    drop = nn.Dropout(self.dropout_rate, deterministic=not train)
    attend = lambda y: Attention(self.num_heads, self.qkv_bias, self.attention_dropout_rate,
                                 self.attention, self.dtype, name="attention")(
                                     y, y, mask, train=train)
    mlp = MLP(self.mlp_dim, self.activation, self.dtype, name="mlp")
    if self.pre_norm:
      x = x + drop(attend(norm("norm1")(x)))
      return x + drop(mlp(norm("norm2")(x)))
    x = norm("norm1")(x + drop(attend(x)))
    return norm("norm2")(x + drop(mlp(x)))


class _ScanStep(nn.Module):
  """`EncoderLayer` as an `nn.scan` body: `(x, mask, train) -> (x', x')`."""
  layer: dict

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array], train: bool) -> Tuple[Array, Array]:
    y = EncoderLayer(**self.layer, name="layer")(x, mask, train)
    return y, y


class Encoder(nn.Module):
  """`num_layers` identical `EncoderLayer`s (its fields, and `remat`, `scan`): `(B, T, D)` ->
  (the output, the hidden states `(input, after layer 1, ..., after layer L)`, as the
  references' `hidden_states`). Layer i's parameters are `layer_{i}`, or row i of the stacked
  `layers/layer` when scanned."""
  num_layers: int
  num_heads: int
  mlp_dim: int
  activation: str = "gelu"
  layer_norm_eps: float = 1e-5
  pre_norm: bool = True
  qkv_bias: bool = True
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  attention: str = "auto"
  remat: str = "none"
  scan: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array],
               train: bool = False) -> Tuple[Array, Tuple[Array, ...]]:
    check_choice("remat", self.remat, tuple(REMAT_POLICIES))
    check_choice("attention", self.attention, ATTENTION_IMPLEMENTATIONS)
    layer = {name: getattr(self, name) for name in registry.fields(EncoderLayer)}
    policy = REMAT_POLICIES[self.remat]
    if self.scan:
      step = _ScanStep if self.remat == "none" else nn.remat(_ScanStep, policy=policy,
                                                             static_argnums=(3,))
      scanned = nn.scan(step, variable_axes={"params": 0}, split_rngs={"params": True,
                                                                       "dropout": True},
                        in_axes=(nn.broadcast, nn.broadcast), length=self.num_layers)
      inputs = x
      x, stacked = scanned(layer, name="layers")(x, mask, train)
      return x, (inputs,) + tuple(stacked[i] for i in range(self.num_layers))
    block = EncoderLayer if self.remat == "none" else nn.remat(EncoderLayer, policy=policy,
                                                               static_argnums=(3,))
    hidden = [x]
    for index in range(self.num_layers):
      x = block(**layer, name=f"layer_{index}")(x, mask, train)
      hidden.append(x)
    return x, tuple(hidden)


def required(module: nn.Module, *names: str) -> None:
  """A ValueError naming the first architecture field left None (it comes from a checkpoint)."""
  for name in names:
    if getattr(module, name) is None:
      raise ValueError(f"{type(module).__name__}.{name} is unset; give the encoder a checkpoint "
                       f"(its config.json sets it) or set {name}")


def patch_tokens(images: Array, width: int, patch: Any, stride: Any, bias: bool,
                 dtype: Any) -> Array:
  """`(B, H, W, C)` -> `(B, N, width)`: a `patch`×`patch` convolution with `stride` (ViT's patch
  embedding, `patch_embedding` parameters), its output grid flattened row-major (as the
  references' `flatten(2).transpose(1, 2)` of an NCHW map)."""
  grid = nn.Conv(width, (patch, patch) if isinstance(patch, int) else patch,
                 strides=stride, padding="VALID", use_bias=bias, dtype=dtype,
                 kernel_init=nn.initializers.normal(0.02), name="patch_embedding")(
                     images.astype(dtype))
  return grid.reshape(grid.shape[0], -1, grid.shape[-1])


class Tower(nn.Module):
  """Fields shared by every tower: the architecture (None: from `checkpoint`'s config.json, or
  an error when there is no checkpoint), the checkpoint, and the training controls."""
  checkpoint: Optional[str] = None
  hidden_size: Optional[int] = None
  num_layers: Optional[int] = None
  num_heads: Optional[int] = None
  mlp_dim: Optional[int] = None
  activation: Optional[str] = None
  layer_norm_eps: Optional[float] = None
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  attention: str = "auto"
  remat: str = "none"
  scan: bool = False
  dtype: Any = jnp.float32

  PREFIX_TOKENS: ClassVar[int] = 1
  INPUT_SIDE: ClassVar[Tuple[str, ...]] = ()   # parameters before the first layer (depth 0)

  def encoder(self, pre_norm: bool = True, qkv_bias: bool = True) -> Encoder:
    required(self, "hidden_size", "num_layers", "num_heads", "mlp_dim", "activation",
             "layer_norm_eps")
    return Encoder(num_layers=self.num_layers, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                   activation=self.activation, layer_norm_eps=self.layer_norm_eps,
                   pre_norm=pre_norm, qkv_bias=qkv_bias, dropout_rate=self.dropout_rate,
                   attention_dropout_rate=self.attention_dropout_rate,
                   attention=self.attention, remat=self.remat, scan=self.scan,
                   dtype=self.dtype, name="encoder")

  def tanh_pooler(self, last: Array) -> Array:
    """BERT's and ViT's pooler: tanh(W_p h[:, 0] + b_p), parameters `pooler`."""
    return jnp.tanh(nn.Dense(self.hidden_size, dtype=self.dtype, name="pooler")(last[:, 0]))

  def norm(self, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name=name)

  def __call__(self, x: Array, mask: Optional[Array] = None, *, train: bool = False) -> Array:
    """The encoder contract: `(B, D)` features, zeros for an absent example. `features` names
    an output (`pooler_output`, `image_embeds`, ...) or a pooling of `last_hidden_state`: `cls`
    (its first token) or `mean` (over real tokens for text; over the patch tokens, after the
    class/distillation tokens, for images and audio)."""
    outputs = self.outputs(x, mask, train=train)
    if self.features in ("cls", "mean"):
      tokens = outputs["last_hidden_state"]
      if self.features == "cls":
        features = tokens[:, 0]
      elif self.input_axes == ("B", "T"):
        features = masked_mean(tokens, mask if mask is not None else
                               jnp.ones(tokens.shape[:2], bool))
      else:
        features = tokens[:, self.PREFIX_TOKENS:].mean(axis=1)
    elif self.features in outputs:
      features = outputs[self.features]
    else:
      raise ValueError(f"features={self.features!r}; use one of cls, mean, "
                       f"{', '.join(k for k in outputs if k != 'hidden_states')}")
    return zero_absent(features.astype(self.dtype), mask)

  def parameter_depth(self, path: Sequence[str]) -> Any:
    """Where the parameter at `path` (inside the tower) sits, for layer-wise learning rates:
    0 for the input side (`INPUT_SIDE`: embeddings, their norms), i for layer i (1..L; a
    scanned encoder's stacked parameters get the array `(L, 1, ...)` of 1..L), L + 1 for what
    reads the last layer (final norms, pooler, projection, heads)."""
    if path[0] == "encoder":
      if path[1] == "layers":
        return np.arange(1, self.num_layers + 1)
      return int(path[1][len("layer_"):]) + 1
    return 0 if path[0] in self.INPUT_SIDE else self.num_layers + 1
