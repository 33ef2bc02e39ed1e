"""MultimodalModel on malformed batches: a one-line DataError naming the key and the problem, eager
and under jit, or the documented numbers (absent modalities, NaN propagation, NaN for token ids
outside the vocabulary under jit) — never a silent finite wrong number."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.errors import DataError
from mmjax.model import model_from_config

VOCAB = 20
HEAD = {"label": {"name": "linear", "num_classes": 3}}
CONFIGS = {
    "lstm_image": {"encoders": {"text": {"name": "lstm", "vocab_size": VOCAB, "embed_dim": 4,
                                         "hidden_dim": 8, "num_layers": 1},
                                "image": {"name": "conv_pool", "channels": 4}},
                   "fusion": {"name": "concat"}, "heads": HEAD},
    "transformer_image": {"encoders": {"text": {"name": "transformer", "vocab_size": VOCAB,
                                                "max_length": 8, "model_dim": 8, "num_layers": 1,
                                                "num_heads": 2, "mlp_dim": 8},
                                       "image": {"name": "conv_pool", "channels": 4}},
                          "fusion": {"name": "concat"}, "heads": HEAD},
    "features": {"encoders": {"audio": {"name": "sequence_lstm", "hidden_dim": 8},
                              "meta": {"name": "mlp", "hidden_dims": (8,), "dim": 4}},
                 "fusion": {"name": "concat"}, "heads": HEAD},
}


def clean_batch(config):
  rng = np.random.default_rng(0)
  if config == "features":
    return {"audio": rng.normal(size=(2, 6, 3)).astype(np.float32),
            "audio_mask": np.arange(6) < np.array([[6], [4]]),
            "meta": rng.normal(size=(2, 5)).astype(np.float32),
            "label": np.array([0, 2], np.int32)}
  return {"text": rng.integers(1, VOCAB, (2, 5)).astype(np.int32),
          "text_mask": np.arange(5) < np.array([[5], [3]]),
          "image": rng.normal(size=(2, 8, 8, 3)).astype(np.float32),
          "label": np.array([0, 2], np.int32)}


@functools.lru_cache(maxsize=None)
def built(config):
  model = model_from_config(CONFIGS[config])
  return model, model.init(jax.random.key(0), clean_batch(config))


def logits(config, batch, jit=False):
  model, params = built(config)
  return np.asarray((jax.jit(model.apply) if jit else model.apply)(params, batch)["label"])


def edited(batch, **changes):
  """`batch` with `changes` applied; a change to None removes the key."""
  batch = {**batch, **changes}
  return {key: value for key, value in batch.items() if value is not None}


def with_value(array, index, value):
  """A copy of `array` with `array[index] = value`."""
  array = array.copy()
  array[index] = value
  return array


def assert_one_line_data_error(match, config, batch, jit=False):
  with pytest.raises(DataError, match=match) as error:
    logits(config, batch, jit=jit)
  assert "\n" not in str(error.value)


B = clean_batch("lstm_image")
F = clean_batch("features")
MALFORMED = {
    # name: (config, batch, message pattern)
    "missing_second_modality": ("lstm_image", edited(B, image=None),
                                r"the batch has no 'image' \(its keys: label, text, text_mask\)"),
    "missing_first_modality": ("lstm_image", edited(B, text=None, text_mask=None),
                               r"the batch has no 'text' \(its keys: image, label\)"),
    "image_without_channel_axis": ("lstm_image", edited(B, image=B["image"][..., 0]),
                                   r"batch\['image'\] has shape \(2, 8, 8\), but its encoder "
                                   r"\(ConvPoolImageEncoder\) reads \(B, H, W, C\)"),
    "tokens_with_an_extra_axis": ("lstm_image", edited(B, text=B["text"][..., None]),
                                  r"batch\['text'\] has shape \(2, 5, 1\), but its encoder "
                                  r"\(LSTMTextEncoder\) reads \(B, T\)"),
    "float_tokens": ("lstm_image", edited(B, text=B["text"].astype(np.float32)),
                     r"batch\['text'\] is float32, but its encoder \(LSTMTextEncoder\) reads "
                     r"integer token ids"),
    "bool_tokens": ("lstm_image", edited(B, text=B["text"] > 5),
                    r"batch\['text'\] is bool, but .* reads integer token ids"),
    "token_mask_one_step_short": ("lstm_image", edited(B, text_mask=B["text_mask"][:, :4]),
                                  r"batch\['text_mask'\] has shape \(2, 4\), but batch\['text'\] "
                                  r"is \(2, 5\); make the mask \(B, T\) = \(2, 5\)"),
    "token_mask_as_presence": ("lstm_image", edited(B, text_mask=np.ones(2, bool)),
                               r"batch\['text_mask'\] has shape \(2,\), .* \(B, T\) = \(2, 5\)"),
    "image_mask_per_row": ("lstm_image", edited(B, image_mask=np.ones((2, 8), bool)),
                           r"batch\['image_mask'\] has shape \(2, 8\), but batch\['image'\] is "
                           r"\(2, 8, 8, 3\); make the mask \(B,\) = \(2,\)"),
    "image_mask_of_another_batch_size": ("lstm_image", edited(B, image_mask=np.ones(3, bool)),
                                         r"batch\['image_mask'\] has shape \(3,\)"),
    "second_modality_batch_size_differs": (
        "lstm_image", edited(B, image=np.zeros((3, 8, 8, 3), np.float32),
                             image_mask=np.ones(3, bool)),
        r"the modalities disagree on the batch size B: batch\['text'\] is \(2, 5\), "
        r"batch\['image'\] is \(3, 8, 8, 3\)"),
    "first_modality_batch_size_differs": (
        "lstm_image", edited(B, text=np.ones((3, 5), np.int32), text_mask=np.ones((3, 5), bool)),
        r"the modalities disagree on the batch size B: batch\['text'\] is \(3, 5\)"),
    "empty_batch": ("lstm_image", {key: value[:0] for key, value in B.items()},
                    r"batch\['text'\] has shape \(0, 5\), with B = 0; leave empty batches out"),
    "empty_second_modality": ("lstm_image", edited(B, image=B["image"][:0]),
                              r"batch\['image'\] has shape \(0, 8, 8, 3\), with B = 0"),
    "zero_length_tokens": ("lstm_image", edited(B, text=B["text"][:, :0],
                                                text_mask=B["text_mask"][:, :0]),
                           r"batch\['text'\] has shape \(2, 0\), with T = 0; make it at least 1 "
                           r"\(an example without 'text' is a row of padding with an all-False "
                           r"text_mask"),
    "zero_height_image": ("lstm_image", edited(B, image=B["image"][:, :0]),
                          r"batch\['image'\] has shape \(2, 0, 8, 3\), with H = 0"),
    "feature_sequence_without_time_axis": ("features", edited(F, audio=F["audio"][:, 0],
                                                              audio_mask=None),
                                           r"batch\['audio'\] has shape \(2, 3\), but its encoder "
                                           r"\(LSTMSequenceEncoder\) reads \(B, T, D\)"),
    "feature_vector_with_time_axis": ("features", edited(F, meta=F["meta"][:, None]),
                                      r"batch\['meta'\] has shape \(2, 1, 5\), .* reads \(B, D\)"),
    "feature_sequence_mask_too_long": (
        "features", edited(F, audio_mask=np.ones((2, 7), bool)),
        r"batch\['audio_mask'\] has shape \(2, 7\), .* make the mask \(B,\) = \(2,\) or "
        r"\(B, T\) = \(2, 6\)"),
    "feature_vector_mask_per_feature": (
        "features", edited(F, meta_mask=np.ones((2, 5), bool)),
        r"batch\['meta_mask'\] has shape \(2, 5\), .* make the mask \(B,\) = \(2,\), True"),
    "zero_length_feature_sequence": ("features", edited(F, audio=F["audio"][:, :0],
                                                        audio_mask=F["audio_mask"][:, :0]),
                                     r"batch\['audio'\] has shape \(2, 0, 3\), with T = 0"),
}


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_batch_is_a_one_line_data_error_naming_the_key_before_compiling(case, jit):
  config, batch, message = MALFORMED[case]
  assert_one_line_data_error(message, config, batch, jit=jit)


OUT_OF_VOCABULARY = {
    # name: (position, id)
    "id_equal_to_vocab_size": ((1, 2), VOCAB),
    "id_far_above_vocab_size": ((0, 0), 1000),
    "id_minus_one": ((0, 4), -1),
    "id_minus_vocab_size": ((1, 0), -VOCAB),
}


@pytest.mark.parametrize("as_array", [np.asarray, jnp.asarray], ids=["numpy", "jax"])
@pytest.mark.parametrize("case", sorted(OUT_OF_VOCABULARY))
def test_concrete_token_id_outside_the_vocabulary_is_a_data_error_naming_value_and_position(
    case, as_array):
  position, token_id = OUT_OF_VOCABULARY[case]
  batch = edited(B, text=as_array(with_value(B["text"], position, token_id)))
  message = (rf"batch\['text'\] has token id {token_id} at position \({position[0]}, "
             rf"{position[1]}\), outside \[0, vocab_size={VOCAB}\)")
  assert_one_line_data_error(message, "lstm_image", batch)


def test_concrete_token_id_outside_the_vocabulary_inside_jit_is_a_data_error():
  """A batch closed over by a jitted function stays concrete while it is traced."""
  model, params = built("lstm_image")
  batch = edited(B, text=with_value(B["text"], (1, 2), VOCAB))
  with pytest.raises(DataError, match=r"batch\['text'\] has token id 20 at position \(1, 2\)"):
    jax.jit(lambda p: model.apply(p, batch))(params)


def test_padding_ids_must_be_in_the_vocabulary_too():
  """(1, 4) is padding: example 1 has 3 real tokens."""
  batch = edited(B, text=with_value(B["text"], (1, 4), -1))
  assert_one_line_data_error(r"batch\['text'\] has token id -1 at position \(1, 4\)",
                             "lstm_image", batch)


@pytest.mark.parametrize("config", ["lstm_image", "transformer_image"])
@pytest.mark.parametrize("case", sorted(OUT_OF_VOCABULARY))
def test_token_id_outside_the_vocabulary_under_jit_gives_nan_for_its_example_only(case, config):
  """Example 1's real tokens are positions 0..2; the bad id goes to a real position of example 1
  (a negative id must not wrap around to a real embedding row)."""
  _, token_id = OUT_OF_VOCABULARY[case]
  clean = logits(config, B, jit=True)
  bad = logits(config, edited(B, text=with_value(B["text"], (1, 1), token_id)), jit=True)
  assert np.isnan(bad[1]).all()
  np.testing.assert_allclose(bad[0], clean[0], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.int64, np.int16, np.uint8])
def test_any_integer_token_dtype_gives_the_int32_numbers(dtype):
  np.testing.assert_allclose(logits("lstm_image", edited(B, text=B["text"].astype(dtype))),
                             logits("lstm_image", B), rtol=1e-6)


def absent_reference(config, clean, absent, modality, example):
  """The output of `example` with `modality` absent as masking.py defines it: its encoder's
  features of the `clean` batch set to zero, then the fusion (given the `absent` batch's masks)
  and the head."""
  model, params = built(config)
  bound = model.bind(params)
  features = bound.encode(clean)
  features[modality] = features[modality].at[example].set(0)
  masks = {m: absent[f"{m}_mask"] for m in model.encoders if f"{m}_mask" in absent}
  return np.asarray(bound.heads["label"](bound.fusion(features, masks))[example])


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("config,modality,mask", [
    ("lstm_image", "text", np.array([[False] * 5, [True] * 3 + [False] * 2])),
    ("transformer_image", "text", np.array([[False] * 5, [True] * 3 + [False] * 2])),
    ("lstm_image", "image", np.array([False, True])),
    ("features", "audio", np.array([[False] * 6, [True] * 4 + [False] * 2])),
    ("features", "audio", np.array([False, True])),
    ("features", "meta", np.array([False, True])),
], ids=["lstm_tokens", "transformer_tokens", "image_presence", "sequence_steps",
        "sequence_presence", "vector_presence"])
def test_all_false_mask_row_is_the_modality_absent_whatever_its_values(config, modality, mask,
                                                                      jit):
  """Example 0 is absent; example 1 keeps the clean batch's real positions (all, for `(B,)`)."""
  batch = clean_batch(config)
  absent = edited(batch, **{f"{modality}_mask": mask})
  present = edited(batch, **{f"{modality}_mask": np.ones_like(mask) if mask.ndim == 1
                             else batch[f"{modality}_mask"]})
  zeroed = edited(absent, **{modality: with_value(batch[modality], 0, 0)})
  out = logits(config, absent, jit=jit)
  np.testing.assert_allclose(out[0], absent_reference(config, batch, absent, modality, 0),
                             atol=1e-6)
  np.testing.assert_allclose(out, logits(config, zeroed, jit=jit), atol=1e-6)
  np.testing.assert_allclose(out[1], logits(config, present, jit=jit)[1], atol=1e-6)


def test_presence_mask_of_a_feature_sequence_applies_to_every_step():
  unmasked = edited(F, audio_mask=None)
  np.testing.assert_allclose(logits("features", edited(F, audio_mask=np.ones(2, bool))),
                             logits("features", unmasked), rtol=1e-6)


@pytest.mark.parametrize("config,modality,position", [
    ("lstm_image", "image", (0, 3, 4, 1)),
    ("features", "audio", (0, 2, 1)),
    ("features", "meta", (0, 3)),
], ids=["image_pixel", "sequence_real_step", "feature_vector"])
def test_nan_at_a_real_position_reaches_that_example_only(config, modality, position):
  batch = clean_batch(config)
  values = with_value(batch[modality], position, np.nan)
  poisoned, clean = logits(config, edited(batch, **{modality: values})), logits(config, batch)
  assert np.isnan(poisoned[0]).all()
  np.testing.assert_allclose(poisoned[1], clean[1], rtol=1e-6)


def test_nan_in_an_absent_image_is_ignored():
  absent = edited(B, image_mask=np.array([False, True]))
  poisoned = edited(absent, image=with_value(B["image"], 0, np.nan))
  np.testing.assert_allclose(logits("lstm_image", poisoned), logits("lstm_image", absent),
                             atol=1e-6)


def test_nan_at_a_padded_step_of_a_transformer_changes_nothing():
  """Example 1's text has 3 real tokens; an id outside the vocabulary at its padded step 4 embeds
  to NaN under jit and must not reach any output (bug caught: masking the attention weights
  only, where 0 · NaN is NaN)."""
  model, params = built("transformer_image")
  batch = clean_batch("transformer_image")
  text = np.array(batch["text"])
  text[1, 4] = VOCAB + 3
  np.testing.assert_array_equal(
      np.asarray(jax.jit(model.apply)(params, edited(batch, text=text))["label"]),
      logits("transformer_image", batch, jit=True))
