"""Builds the tiny Hugging Face fixtures that `mmjax/pretrained/` and `mmjax/data/processors.py`
are tested against: random towers in Hugging Face layout, their tokenizers and processors, and
the reference outputs of `transformers` on fixed inputs.

Run from the repository root (it takes a few seconds on a CPU):

    /work/refvenv/bin/python experiments/pretrained/make_fixtures.py [--out tests/data/pretrained]

It needs torch and transformers (and sentencepiece + protobuf for SigLIP's tokenizer). None of
them is a dependency of mmjax or of its tests: the tests read only the files written here.
Written with torch 2.13.0+cpu, transformers 5.24.0, tokenizers 0.23.3, sentencepiece 0.2.3,
safetensors 0.8.0, Pillow 12.3.0, numpy 2.4.6 (each `reference.npz` records the versions).
Pillow matters: 13.0 runs the vertical pass of a resize first for some shapes (e.g. height
shrinking, width not), which moves bicubic pixels by up to 10/255 from 12.x on noise images;
mmjax pins Pillow<13, so the references are made with 12.x (checked in `main`).

One folder per case under `--out`:

  clip_quick_gelu, clip_gelu  CLIPModel (quick_gelu / gelu; the second has odd head counts)
  siglip                      SiglipModel (attention-pooling vision head, logit bias)
  bert                        BertModel with pooler, saved in 2+ safetensors shards
  roberta                     RobertaModel with pooler (position ids offset by pad id + 1)
  vit, vit_no_qkv_bias        ViTModel with pooler, with and without q/k/v biases
  ast                         ASTModel (Audio Spectrogram Transformer)

Each folder holds what `save_pretrained` writes (config.json, model.safetensors or shards +
index, the tokenizer / image processor / feature extractor files) and:

  reference.npz         the model inputs (`input_ids`, `attention_mask`, `token_type_ids` as
                        int32; `pixel_values` (B, C, H, W); `input_values` (B, T, mel)), the
                        outputs of `model(**inputs, output_hidden_states=True)` as float32
                        (`last_hidden_state`, `pooler_output`, `hidden_states_0..L`; for CLIP and
                        SigLIP the same keys prefixed `vision.` / `text.`, plus `text_embeds`,
                        `image_embeds`, `logits_per_image`, `logits_per_text`), and `meta`, a
                        JSON string (versions, model class, which inputs the model was given,
                        the `texts` (and BERT's second-segment `text_pairs`) tokenised).
  tokenizer_cases.json  fixed strings with the reference tokenizer's ids and masks
                        (padding="max_length", truncation=True, max_length=model_max_length).
  preprocess.npz        image cases (clip_quick_gelu, siglip, vit): uint8 images `image_*` and
                        the processor's `pixel_values_*` (C, H, W); audio case (ast): waveforms
                        `waveform_*` and the extractor's `input_values_*` (T, mel).

Choices that matter to a re-implementation:
- Every parameter gets N(0, 0.1^2) noise after Hugging Face's init, so LayerNorm scales are not
  1, biases are not 0 and a missing bias or norm changes the outputs.
- Transformers 5's default image processors need torchvision, which is not installed here, so
  the `*ImageProcessorPil` classes (PIL resize, numpy crop/rescale/normalise) produced the
  references; `image_processor_type` in preprocessor_config.json is still the plain class name.
- torchaudio is not installed, so ASTFeatureExtractor used its numpy filter-bank path
  (`transformers.audio_utils.spectrogram`), not `torchaudio.compliance.kaldi.fbank`.
- SigLIP's text tower is given no attention mask (it is trained on max-length padded ids).
- SiglipTokenizer is sentencepiece-only and saves no tokenizer.json; the siglip folder gets one
  built here with transformers' SpmConverter plus SigLIP's text canonicalisation as
  normalisers, checked to give SiglipTokenizer's ids (see `write_siglip_tokenizer_json`).
- Tokenizers are trained here on a small English corpus: CLIP's and RoBERTa's byte-level BPE merges
  learned in-script, BERT's WordPiece vocab written by hand, SigLIP's unigram with `sentencepiece`.
"""
import argparse
import collections
import io
import json
import os
import re
import shutil
import string
import time

import numpy as np
import PIL
import PIL.Image
import safetensors
import sentencepiece as spm
import tokenizers
import torch
import transformers
from tokenizers import Regex, normalizers, processors
from transformers.convert_slow_tokenizer import SpmConverter

CORPUS = """\
A photo of a cat sitting on a wooden table next to a cup of coffee.
Two dogs are running across a green field under a bright blue sky.
The quick brown fox jumps over the lazy dog while the birds are singing.
A man riding a bicycle down a busy city street in the rain.
An old red car parked in front of a small white house with a garden.
A bowl of fresh fruit with apples, oranges and bananas on the kitchen counter.
The children are playing football in the park after school on a sunny afternoon.
A woman reading a book by the window of a quiet library.
Mountains covered with snow rise above a calm lake at sunrise.
A plate of pasta with tomato sauce, basil and grated cheese.
People walking along the beach as the waves roll onto the sand.
A black and white photograph of a train crossing an old stone bridge.
The audio clip contains music, speech and the sound of rain on a roof.
A small boat is sailing on the sea near a lighthouse at night.
Sentiment: this movie was wonderful, the actors were great and the story was moving.
It's a bad film; I didn't like the ending and the music was too loud.
We're going to the market tomorrow morning to buy bread, milk and eggs.
The model learns a joint embedding of images and text with a contrastive loss.
Numbers like 1, 2, 3, 10 and 2024 appear in dates, prices and scores.
Questions? Answers! Punctuation: commas, periods, colons and semicolons.
"""

TOKENIZER_STRINGS = [
  "a photo of a cat",
  "Two dogs are running across a green field.",
  "café naïve Ωmega",
  "🙂🚀",
  "中文字",
  "",
  "   \t\n  ",
  "Hello, world!!! (yes) -- it's \"quoted\"; 3.14?",
  "The quick brown fox jumps over the lazy dog while the birds are singing, and the children"
  " are playing football in the park after school on a sunny afternoon near the old stone"
  " bridge where a train is crossing slowly under a bright blue sky.",
]
# Two captions of different lengths: the first is padded, the second fills or overflows.
TEXT_PAIR = ["a photo of a cat", "two dogs are running across a green field under a bright blue sky"]
SECOND_SEGMENT = ["on a table", "near a small white house with a garden"]
IMAGE_SIZES = [(40, 50), (64, 31), (32, 32), (17, 90)]  # (height, width)


# ----------------------------------------------------------------------------------------------
# Shared helpers.


def versions():
  return {
    "torch": torch.__version__, "transformers": transformers.__version__,
    "tokenizers": tokenizers.__version__, "sentencepiece": spm.__version__,
    "safetensors": safetensors.__version__, "Pillow": PIL.__version__, "numpy": np.__version__,
  }


def perturb(model, scale=0.1):
  """Adds N(0, scale^2) noise to every parameter, so norms and biases are not 1s and 0s."""
  with torch.no_grad():
    for p in model.parameters():
      p.add_(scale * torch.randn_like(p))
  return model.float().eval()


def tower_outputs(output, prefix=""):
  """`last_hidden_state`, `pooler_output` and `hidden_states_i` of one tower as float32 numpy."""
  arrays = {prefix + "last_hidden_state": output.last_hidden_state,
            prefix + "pooler_output": output.pooler_output}
  for i, h in enumerate(output.hidden_states):
    arrays[f"{prefix}hidden_states_{i}"] = h
  return arrays


def two_tower_outputs(model, inputs):
  """CLIP / SigLIP: both towers' own outputs (`vision.*`, `text.*`: `model.vision_model` and
  `model.text_model` run alone, since transformers 5's `CLIPModel` output overwrites the towers'
  `pooler_output` with the projected one), and the pair's embeddings and logits."""
  text_inputs = {k: v for k, v in inputs.items() if k != "pixel_values"}
  arrays = {**tower_outputs(run_model(model.vision_model,
                                      {"pixel_values": inputs["pixel_values"]}), "vision."),
            **tower_outputs(run_model(model.text_model, text_inputs), "text.")}
  output = run_model(model, inputs)
  for key in ["text_embeds", "image_embeds", "logits_per_image", "logits_per_text"]:
    arrays[key] = getattr(output, key)
  return arrays


def to_numpy(arrays):
  out = {}
  for k, v in arrays.items():
    v = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
    out[k] = v.astype(np.int32) if np.issubdtype(v.dtype, np.integer) else v.astype(np.float32)
  return out


def run_model(model, inputs):
  """Runs the model on `inputs` (numpy) and returns the outputs object."""
  with torch.no_grad():
    return model(**{k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()},
                 output_hidden_states=True)


def write_case(directory, model, inputs, outputs, meta, *processors, max_shard_size="50MB"):
  """Saves the model, its processors, and reference.npz = inputs + outputs + meta."""
  os.makedirs(directory, exist_ok=True)
  model.save_pretrained(directory, safe_serialization=True, max_shard_size=max_shard_size)
  for p in processors:
    p.save_pretrained(directory)
  meta = dict(meta, model_class=type(model).__name__, model_inputs=sorted(inputs),
              versions=versions())
  np.savez_compressed(os.path.join(directory, "reference.npz"), meta=np.array(json.dumps(meta)),
                      **to_numpy(inputs), **to_numpy(outputs))


def text_inputs(tokenizer, texts, pairs=None, keys=("input_ids", "attention_mask")):
  """The tokenizer's max-length padded batch for `texts` (and second segments), int64 numpy."""
  enc = tokenizer(texts, pairs, padding="max_length", truncation=True,
                  max_length=tokenizer.model_max_length, return_tensors="np")
  return {k: enc[k].astype(np.int64) for k in keys}


def write_tokenizer_cases(directory, tokenizer):
  max_length = tokenizer.model_max_length
  enc = tokenizer(TOKENIZER_STRINGS, padding="max_length", truncation=True, max_length=max_length)
  cases = {"tokenizer_class": type(tokenizer).__name__, "max_length": max_length,
           "texts": TOKENIZER_STRINGS, "input_ids": enc["input_ids"],
           "attention_mask": enc["attention_mask"]}
  with open(os.path.join(directory, "tokenizer_cases.json"), "w", encoding="utf-8") as f:
    json.dump(cases, f, ensure_ascii=False, indent=1)


def random_images(rng):
  """Four RGB images of different sizes, one grayscale and one RGBA, uint8 (H, W[, C])."""
  images = {f"image_{i}": rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            for i, (h, w) in enumerate(IMAGE_SIZES)}
  images["image_gray"] = rng.integers(0, 256, (36, 28), dtype=np.uint8)
  images["image_rgba"] = rng.integers(0, 256, (30, 45, 4), dtype=np.uint8)
  return images


def write_image_cases(directory, processor, rng):
  """preprocess.npz: each image and the processor's pixel_values (C, H, W) for it."""
  arrays, skipped = {}, []
  for name, image in random_images(rng).items():
    try:
      pixels = processor(images=PIL.Image.fromarray(image), return_tensors="np")["pixel_values"]
    except Exception as e:  # The processor refuses this kind of image; say so in the meta.
      skipped.append(f"{name}: {type(e).__name__}: {e}")
      continue
    arrays[name] = image
    arrays["pixel_values" + name[len("image"):]] = pixels[0].astype(np.float32)
  meta = {"processor_class": type(processor).__name__, "backend": processor.backend,
          "skipped": skipped, "versions": versions()}
  np.savez_compressed(os.path.join(directory, "preprocess.npz"), meta=np.array(json.dumps(meta)),
                      **arrays)


def learn_merges(tokenizer, num_merges, end_of_word_suffix=""):
  """BPE merges learned on CORPUS, split by the tokenizer's own normaliser and pre-tokeniser.
  Written out (not `tokenizers.trainers.BpeTrainer`, whose ties between equal counts fall
  differently from run to run) so that the fixtures are the same on every run."""
  backend = tokenizer.backend_tokenizer
  counts = collections.Counter()
  for line in CORPUS.splitlines():
    line = backend.normalizer.normalize_str(line) if backend.normalizer else line
    counts.update(word for word, _ in backend.pre_tokenizer.pre_tokenize_str(line))
  words = {tuple(w[:-1]) + (w[-1] + end_of_word_suffix,): c for w, c in counts.items()}
  merges = []
  for _ in range(num_merges):
    pairs = collections.Counter()
    for word, count in words.items():
      for pair in zip(word, word[1:]):
        pairs[pair] += count
    if not pairs:
      break
    best = min(pairs, key=lambda pair: (-pairs[pair], pair))  # Most frequent, then alphabetical.
    merges.append(best)
    words = {merge_pair(word, best): count for word, count in words.items()}
  return merges


def merge_pair(word, pair):
  out, i = [], 0
  while i < len(word):
    if word[i:i + 2] == pair:
      out.append(word[i] + word[i + 1])
      i += 2
    else:
      out.append(word[i])
      i += 1
  return tuple(out)


def merged_vocab(base, merges, specials_first=(), specials_last=()):
  """A vocab: first specials, base symbols, each merge's product in order, last specials."""
  tokens = list(specials_first) + list(base)
  tokens += ["".join(m) for m in merges] + list(specials_last)
  tokens = list(dict.fromkeys(tokens))  # A merge may reproduce a base symbol.
  return {t: i for i, t in enumerate(tokens)}


# ----------------------------------------------------------------------------------------------
# Tokenizers.


def clip_tokenizer(max_length=16):
  """CLIP's layout: 256 byte symbols, the same with `</w>`, merges, then <|startoftext|> and
  <|endoftext|> (eos = pad = last id, as OpenAI's tokenizer)."""
  merges = learn_merges(transformers.CLIPTokenizer(), 300, end_of_word_suffix="</w>")
  alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
  vocab = merged_vocab(alphabet + [a + "</w>" for a in alphabet], merges,
                       specials_last=["<|startoftext|>", "<|endoftext|>"])
  return transformers.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def roberta_tokenizer(max_length=32):
  """RoBERTa's layout: <s> <pad> </s> <unk>, byte symbols, merges, <mask> last."""
  merges = learn_merges(transformers.RobertaTokenizer(), 250)
  alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
  vocab = merged_vocab(alphabet, merges, specials_first=["<s>", "<pad>", "</s>", "<unk>"],
                       specials_last=["<mask>"])
  return transformers.RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def bert_tokenizer(directory, max_length=32):
  """WordPiece from a hand-written vocab.txt: specials, characters, ##characters, some words."""
  chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()-") + ["中", "文"]
  words = ["the", "a", "of", "and", "photo", "cat", "dog", "##s", "running", "across", "green",
           "field", "on", "table", "near", "small", "white", "house", "with", "garden", "two",
           "are", "under", "bright", "blue", "sky", "quick", "brown", "fox", "jump", "over", "lazy",
           "play", "##ing", "##ed", "##er", "children", "park", "train", "bridge", "hello", "world"]
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars[:36]]
  vocab += [w for w in words if w not in vocab]
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "vocab.txt")
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(vocab) + "\n")
  return transformers.BertTokenizer(vocab=path, do_lower_case=True, model_max_length=max_length)


def siglip_tokenizer(directory, max_length=16):
  """A unigram sentencepiece model (pad 0, eos 1, unk 2, as SigLIP's) loaded by SiglipTokenizer."""
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(CORPUS.lower().splitlines()), model_writer=model, vocab_size=200,
    model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1,
    character_coverage=1.0, minloglevel=2, seed_sentencepiece_size=10000)
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "spiece.model")
  with open(path, "wb") as f:
    f.write(model.getvalue())
  return transformers.SiglipTokenizer(vocab_file=path, model_max_length=max_length)


class _SiglipConverter(SpmConverter):
  """transformers' generic sentencepiece converter, with SigLIP's `ids </s>` template."""

  def post_processor(self):
    eos = self.original_tokenizer.eos_token
    return processors.TemplateProcessing(single=["$A", eos], pair=["$A", eos, "$B", eos],
                                         special_tokens=[(eos, self.original_tokenizer.eos_token_id)])


def write_siglip_tokenizer_json(directory, tokenizer):
  """SiglipTokenizer is sentencepiece-only in transformers 5 and writes no tokenizer.json. This
  writes one: transformers' SpmConverter (unigram, precompiled normaliser, metaspace) behind the
  normalisers that do SiglipTokenizer.canonicalize_text in Python (lowercase, drop ASCII
  punctuation, collapse whitespace, strip). It is checked to give the same ids on every
  test string and corpus line before it is written."""
  backend = _SiglipConverter(tokenizer).converted()
  punctuation = Regex("[" + re.escape(string.punctuation) + "]")
  backend.normalizer = normalizers.Sequence([
    normalizers.Lowercase(), normalizers.Replace(punctuation, ""),
    normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(), backend.normalizer])
  for text in TOKENIZER_STRINGS + CORPUS.splitlines():
    expected = tokenizer(text)["input_ids"]
    assert backend.encode(text).ids == expected, (text, backend.encode(text).ids, expected)
  backend.save(os.path.join(directory, "tokenizer.json"))


# ----------------------------------------------------------------------------------------------
# Cases: one function per family; each builds, runs and writes its folder(s).


def make_clip(out, seed):
  tokenizer = clip_tokenizer()
  processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size=32)
  special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
             "pad_token_id": tokenizer.pad_token_id}
  assert special["eos_token_id"] != 2, "eos 2 would select HF's legacy argmax pooling"
  for name, act, hidden, heads in [("clip_quick_gelu", "quick_gelu", 32, 4),
                                   ("clip_gelu", "gelu", 36, 3)]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = transformers.CLIPConfig(
      text_config=dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=heads, max_position_embeddings=16,
                       hidden_act=act, projection_dim=16, **special),
      vision_config=dict(image_size=32, patch_size=8, hidden_size=hidden, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=heads, hidden_act=act,
                         projection_dim=16),
      projection_dim=16)
    model = perturb(transformers.CLIPModel(config))
    with torch.no_grad():
      model.logit_scale.fill_(2.0)
    inputs = text_inputs(tokenizer, TEXT_PAIR)
    inputs["pixel_values"] = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    write_case(os.path.join(out, name), model, inputs, two_tower_outputs(model, inputs),
               {"hidden_act": act, "logit_scale": 2.0, "texts": TEXT_PAIR}, tokenizer, processor)
    write_tokenizer_cases(os.path.join(out, name), tokenizer)
    if name == "clip_quick_gelu":
      write_image_cases(os.path.join(out, name), processor, rng)


def make_siglip(out, seed):
  torch.manual_seed(seed)
  rng = np.random.default_rng(seed)
  directory = os.path.join(out, "siglip")
  tokenizer = siglip_tokenizer(directory)
  processor = transformers.SiglipImageProcessorPil(size={"height": 32, "width": 32})
  config = transformers.SiglipConfig(
    text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                     num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16,
                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                     bos_token_id=None),
    vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=4, vision_use_head=True))
  model = perturb(transformers.SiglipModel(config))
  with torch.no_grad():
    model.logit_scale.fill_(1.5)
    model.logit_bias.fill_(-3.0)
  inputs = text_inputs(tokenizer, TEXT_PAIR, keys=("input_ids",))
  inputs["pixel_values"] = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
  write_case(directory, model, inputs, two_tower_outputs(model, inputs),
             {"logit_scale": 1.5, "logit_bias": -3.0, "texts": TEXT_PAIR}, tokenizer, processor)
  write_siglip_tokenizer_json(directory, tokenizer)
  write_tokenizer_cases(directory, tokenizer)
  write_image_cases(directory, processor, rng)


def make_bert(out, seed):
  torch.manual_seed(seed)
  directory = os.path.join(out, "bert")
  tokenizer = bert_tokenizer(directory)
  config = transformers.BertConfig(
    vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=64, max_position_embeddings=32, type_vocab_size=2,
    pad_token_id=tokenizer.pad_token_id)
  model = perturb(transformers.BertModel(config, add_pooling_layer=True))
  inputs = text_inputs(tokenizer, TEXT_PAIR, SECOND_SEGMENT,
                       keys=("input_ids", "attention_mask", "token_type_ids"))
  write_case(directory, model, inputs, tower_outputs(run_model(model, inputs)),
             {"texts": TEXT_PAIR, "text_pairs": SECOND_SEGMENT}, tokenizer, max_shard_size="40KB")
  write_tokenizer_cases(directory, tokenizer)


def make_roberta(out, seed):
  torch.manual_seed(seed)
  directory = os.path.join(out, "roberta")
  tokenizer = roberta_tokenizer()
  config = transformers.RobertaConfig(
    vocab_size=len(tokenizer), hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
    intermediate_size=64, max_position_embeddings=32 + 2, type_vocab_size=1, layer_norm_eps=1e-5,
    pad_token_id=1, bos_token_id=0, eos_token_id=2)
  assert tokenizer.pad_token_id == 1
  model = perturb(transformers.RobertaModel(config, add_pooling_layer=True))
  inputs = text_inputs(tokenizer, TEXT_PAIR)
  write_case(directory, model, inputs, tower_outputs(run_model(model, inputs)),
             {"texts": TEXT_PAIR}, tokenizer)
  write_tokenizer_cases(directory, tokenizer)


def make_vit(out, seed):
  processor = transformers.ViTImageProcessorPil(size={"height": 32, "width": 32})
  for name, qkv_bias, hidden, heads in [("vit", True, 32, 4), ("vit_no_qkv_bias", False, 36, 3)]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=hidden,
                                    num_hidden_layers=2, num_attention_heads=heads,
                                    intermediate_size=64, qkv_bias=qkv_bias)
    model = perturb(transformers.ViTModel(config, add_pooling_layer=True))
    inputs = {"pixel_values": rng.standard_normal((2, 3, 32, 32)).astype(np.float32)}
    directory = os.path.join(out, name)
    write_case(directory, model, inputs, tower_outputs(run_model(model, inputs)),
               {"qkv_bias": qkv_bias}, *([processor] if qkv_bias else []))
    if qkv_bias:
      write_image_cases(directory, processor, rng)


def make_ast(out, seed):
  torch.manual_seed(seed)
  rng = np.random.default_rng(seed)
  directory = os.path.join(out, "ast")
  extractor = transformers.ASTFeatureExtractor(num_mel_bins=32, max_length=64, sampling_rate=16000)
  assert not transformers.utils.is_speech_available(), "torchaudio would change the fbank path"
  config = transformers.ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, patch_size=8, frequency_stride=4,
                                  time_stride=4, num_mel_bins=32, max_length=64)
  model = perturb(transformers.ASTModel(config))
  inputs = {"input_values": rng.standard_normal((2, 64, 32)).astype(np.float32)}
  meta = {"feature_extractor_path": "numpy (transformers.audio_utils; torchaudio not installed)"}
  write_case(directory, model, inputs, tower_outputs(run_model(model, inputs)), dict(meta),
             extractor)
  t = np.arange(8000) / 16000
  waveforms = [
    (0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)),  # 0.5 s, 48 frames
    0.3 * rng.standard_normal(16000),  # 1 s = 98 frames > max_length 64: truncated
    0.3 * rng.standard_normal(800),  # 0.05 s = 3 frames: padded
  ]
  arrays = {}
  for i, w in enumerate(waveforms):
    arrays[f"waveform_{i}"] = w.astype(np.float32)
    arrays[f"input_values_{i}"] = extractor(arrays[f"waveform_{i}"], sampling_rate=16000,
                                            return_tensors="np")["input_values"][0]
  meta.update(processor_class=type(extractor).__name__, versions=versions())
  np.savez_compressed(os.path.join(directory, "preprocess.npz"), meta=np.array(json.dumps(meta)),
                      **to_numpy(arrays))


FOLDERS = ("clip_quick_gelu", "clip_gelu", "siglip", "bert", "roberta", "vit", "vit_no_qkv_bias",
           "ast")
CASES = {"clip": make_clip, "siglip": make_siglip, "bert": make_bert, "roberta": make_roberta,
         "vit": make_vit, "ast": make_ast}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default="tests/data/pretrained")
  args = parser.parse_args()
  start = time.time()
  if int(PIL.__version__.split(".")[0]) >= 13:
    raise SystemExit(f"Pillow {PIL.__version__}: install pillow<13 (mmjax's pin), whose resize the "
                     "image references must match")
  for folder in FOLDERS:
    shutil.rmtree(os.path.join(args.out, folder), ignore_errors=True)
  transformers.logging.set_verbosity_error()
  transformers.logging.disable_progress_bar()
  for seed, make in enumerate(CASES.values()):
    make(args.out, seed)
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.out) for f in fs)
  print(f"wrote {args.out}: {size / 1e6:.2f} MB in {time.time() - start:.1f} s")


if __name__ == "__main__":
  main()
