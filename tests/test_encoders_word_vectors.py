"""Pretrained word vectors: reading a GloVe-format file against a vocabulary, initialising the text
encoders' embeddings from the saved table, and freezing it."""
import jax
import numpy as np
import pytest

from mmjax.encoders import LSTMTextEncoder, TransformerTextEncoder, load_word_vectors

GLOVE = """the 0.1 0.2 0.3
paris 1.0 2.0 3.0
Paris -1.0 -2.0 -3.0
. . . 7.0 8.0 9.0
cat 0.5 0.5 0.5
cat 9.0 9.0 9.0
"""
VOCABULARY = ("<pad>", "the", "Paris", "PARIS", ". . .", "cat", "dog")


@pytest.fixture
def glove(tmp_path):
  path = tmp_path / "glove.txt"
  path.write_text(GLOVE, encoding="utf-8")
  return str(path)


def test_rows_are_the_file_vectors_exact_then_lowercase_first_occurrence_wins(glove, capsys):
  table = load_word_vectors(glove, VOCABULARY, 3)
  assert table.shape == (7, 3) and table.dtype == np.float32
  np.testing.assert_array_equal(table[1], np.float32([0.1, 0.2, 0.3]))
  np.testing.assert_array_equal(table[2], [-1, -2, -3])       # exact match before lowercase
  np.testing.assert_array_equal(table[3], [1, 2, 3])          # "PARIS" -> "paris"
  np.testing.assert_array_equal(table[4], [7, 8, 9])          # a word with spaces
  np.testing.assert_array_equal(table[5], [0.5, 0.5, 0.5])    # the first "cat"
  assert "word vectors for 5 of 7 vocabulary words (71.4%)" in capsys.readouterr().out


def test_missing_words_are_seeded_normal_draws_with_the_given_scale(glove):
  table = load_word_vectors(glove, VOCABULARY, 3)
  missing = table[[0, 6]]
  expected = np.random.default_rng(0).normal(size=(7, 3))[[0, 6]] * 0.1
  np.testing.assert_allclose(missing, expected, rtol=1e-6)
  np.testing.assert_array_equal(load_word_vectors(glove, VOCABULARY, 3)[[0, 6]], missing)
  other = load_word_vectors(glove, VOCABULARY, 3, seed=1, scale=1.0)
  assert not np.allclose(other[[0, 6]], missing)
  np.testing.assert_array_equal(other[1:6], table[1:6])


def test_word2vec_header_is_skipped_and_a_wrong_dim_is_one_line(tmp_path):
  path = tmp_path / "vectors.txt"
  path.write_text("2 3\nthe 0.1 0.2 0.3\ncat 1 2 3\n", encoding="utf-8")
  np.testing.assert_array_equal(load_word_vectors(str(path), ("cat",), 3), [[1, 2, 3]])
  with pytest.raises(ValueError, match="has 3 values, not dim=2; pass the file's vector size"):
    load_word_vectors(str(path), ("cat",), 2)


ENCODERS = {
    "lstm": lambda **kw: LSTMTextEncoder(vocab_size=7, embed_dim=3, hidden_dim=4, **kw),
    "transformer": lambda **kw: TransformerTextEncoder(vocab_size=7, max_length=8, model_dim=3,
                                                       num_heads=1, mlp_dim=4, **kw),
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_text_encoders_start_from_the_saved_table_and_freezing_stops_its_gradient(
    name, glove, tmp_path):
  saved = str(tmp_path / "embedding.npy")
  np.save(saved, load_word_vectors(glove, VOCABULARY, 3))
  tokens = np.array([[1, 2, 5, 0], [3, 4, 6, 6]], np.int32)
  loss = lambda encoder: lambda p: (encoder.apply(p, tokens) ** 2).sum()
  for freeze in (False, True):
    encoder = ENCODERS[name](embedding_path=saved, freeze_embedding=freeze)
    params = encoder.init(jax.random.key(0), tokens)
    np.testing.assert_array_equal(params["params"]["embedding"]["embedding"], np.load(saved))
    grads = jax.grad(loss(encoder))(params)["params"]
    assert np.any(grads["embedding"]["embedding"] != 0) != freeze
    rest = [g for key, g in grads.items() if key != "embedding"]
    assert all(np.any(g != 0) for g in jax.tree.leaves(rest))


def test_a_table_of_the_wrong_shape_is_one_line(glove, tmp_path):
  saved = str(tmp_path / "embedding.npy")
  np.save(saved, load_word_vectors(glove, VOCABULARY, 3))
  encoder = LSTMTextEncoder(vocab_size=9, embed_dim=3, hidden_dim=4, embedding_path=saved)
  with pytest.raises(ValueError, match=r"are \(7, 3\), but the embedding is \(9, 3\)"):
    encoder.init(jax.random.key(0), np.zeros((1, 2), np.int32))
