"""The discrete BROJA PID against known answers and against an independent implementation, dit's
`PID_BROJA` with its exponential-cone program (`method="cone"`, Makkeh, Theis, Vicente 2018,
solved by ECOS), and its identities. dit's default solver (SLSQP) and its alternating divergence
minimisation (`"admui"`) stop short of the optimum on some of these random tables, by up to 0.1
bits, some with a redundancy below 0, which BROJA cannot have; ours reaches a lower
I_q(X1, X2; Y) under the same constraints there, so they are not the reference.

Tolerance: 1e-3 bits against dit (measured: at most 1e-8 on these cases); the identities hold to
1e-6 (the interior-point solver's marginals are exact to ~1e-12)."""
import itertools
import math

import dit
import numpy as np
import pytest
from dit.pid import PID_BROJA

from mmjax import pid
from mmjax.data import interactions
from mmjax.errors import DataError

TOLERANCE = 1e-3
TERMS = ("redundancy", "unique_1", "unique_2", "synergy")


def _table(*rows):
  """p[x1, x2, y] from equally likely (x1, x2, y) outcomes."""
  shape = [max(row[i] for row in rows) + 1 for i in range(3)]
  p = np.zeros(shape)
  for row in rows:
    p[row] += 1.0 / len(rows)
  return p


# Canonical distributions and their BROJA PIDs (Bertschinger et al. 2014, Table 1; Griffith &
# Koch 2014): (R, U1, U2, S) in bits.
CANONICAL = {
    "XOR": (_table((0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0)), (0.0, 0.0, 0.0, 1.0)),
    "AND": (_table((0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 1)),   # R = I(X1; Y) = h(1/4) − 1/2
            (-(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75)) - 0.5, 0.0, 0.0, 0.5)),
    "RDN": (_table((0, 0, 0), (1, 1, 1)), (1.0, 0.0, 0.0, 0.0)),
    "UNQ": (_table((0, 0, 0), (0, 1, 0), (1, 0, 1), (1, 1, 1)), (0.0, 1.0, 0.0, 0.0)),
    "COPY": (_table((0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 3)), (0.0, 1.0, 1.0, 0.0)),
}


def _dit_pid(p):
  outcomes = ["".join(map(str, index)) for index in itertools.product(*map(range, p.shape))]
  found = PID_BROJA(dit.Distribution(outcomes, p.ravel()), method="cone")
  return np.array([float(found.get_pi(atom))
                   for atom in (((0,), (1,)), ((0,),), ((1,),), ((0, 1),))])


def _terms(found):
  return np.array([getattr(found, term) for term in TERMS])


def _random_tables(count, seed=0):
  rng = np.random.default_rng(seed)
  for _ in range(count):
    shape = tuple(int(s) for s in rng.integers(2, 5, 3))
    concentration = rng.choice([0.3, 1.0])   # sparse and dense tables
    yield rng.dirichlet(np.full(np.prod(shape), concentration)).reshape(shape)


@pytest.mark.parametrize("name", CANONICAL)
def test_canonical_distributions_have_their_known_pid(name):
  """XOR is pure synergy, RDN pure redundancy, UNQ unique to X1 (bug caught: U1 and U2
  swapped), COPY both uniques, AND 0.311 redundancy and 0.5 synergy; in bits (bug caught:
  natural logarithms, XOR's synergy 0.693)."""
  p, expected = CANONICAL[name]
  found = _terms(pid.pid(p))
  np.testing.assert_allclose(found, expected, atol=1e-5)
  np.testing.assert_allclose(found, _dit_pid(p), atol=TOLERANCE)


@pytest.mark.parametrize("index,p", list(enumerate(_random_tables(16))))
def test_random_tables_agree_with_dit_and_satisfy_the_pid_identities(index, p):
  """R + U_i = I(X_i; Y), U1 + S = I(X1; Y | X2), U2 + S = I(X2; Y | X1) and the four terms sum
  to I(X1, X2; Y); every term ≥ 0 (bug caught: a marginal constraint on (x1, y) twice instead of
  (x1, y) and (x2, y), which leaves I(X2; Y) unmatched)."""
  found = pid.pid(p)
  informations = pid.mutual_informations(p)
  np.testing.assert_allclose(_terms(found), _dit_pid(p), atol=TOLERANCE)
  identities = {
      "R + U1 = I(X1;Y)": (found.redundancy + found.unique_1, informations["mi_1"]),
      "R + U2 = I(X2;Y)": (found.redundancy + found.unique_2, informations["mi_2"]),
      "U1 + S = I(X1;Y|X2)": (found.unique_1 + found.synergy, informations["conditional_1"]),
      "U2 + S = I(X2;Y|X1)": (found.unique_2 + found.synergy, informations["conditional_2"]),
      "R + U1 + U2 + S = I(X1,X2;Y)": (_terms(found).sum(), informations["mi_joint"])}
  for identity, (left, right) in identities.items():
    assert left == pytest.approx(right, abs=1e-6), identity
  assert np.all(_terms(found) > -1e-6), found


def test_the_optimum_keeps_both_marginals_and_minimises_the_joint_information():
  """q* has p's (x1, y) and (x2, y) marginals, and no table with them has a smaller
  I(X1, X2; Y): not p itself, nor random points of the constraint set (p moved along directions
  that keep both marginals)."""
  p = next(_random_tables(1, seed=3))
  q = pid.broja_optimum(p)
  np.testing.assert_allclose(q.sum(axis=1), p.sum(axis=1), atol=1e-9)
  np.testing.assert_allclose(q.sum(axis=0), p.sum(axis=0), atol=1e-9)
  best = pid.mutual_informations(q)["mi_joint"]
  rng = np.random.default_rng(0)
  n1, n2, ny = p.shape
  for _ in range(200):   # d = (u − ū)(v − v̄)w: its (x1, y) and (x2, y) sums are 0
    u, v = rng.normal(size=(n1, 1, 1)), rng.normal(size=(1, n2, 1))
    direction = (u - u.mean()) * (v - v.mean()) * rng.normal(size=(1, 1, ny))
    negative = direction < 0
    largest = np.min(q[negative] / -direction[negative])   # the step that keeps q + t·d ≥ 0
    moved = q + rng.uniform(0, 1) * largest * direction
    assert pid.mutual_informations(moved)["mi_joint"] >= best - 1e-7
  assert pid.mutual_informations(p)["mi_joint"] >= best


GENERATOR_PID = {   # mmjax/data/interactions.py's `joint_distribution` table: 1 − h(0.05) = 0.7136
    "redundancy": (0.7136, 0.0, 0.0, 0.0), "uniqueness": (0.0, 0.7136, 0.0, 0.0),
    "synergy": (0.0, 0.0, 0.0, 0.7136), "mixed": (0.7136, 0.0, 0.0, 0.7832)}


@pytest.mark.parametrize("config", GENERATOR_PID)
def test_the_interactions_generators_have_their_analytic_pid(config):
  found = _terms(pid.pid(interactions.joint_distribution(config)))
  np.testing.assert_allclose(found, GENERATOR_PID[config], atol=1e-4)


@pytest.mark.parametrize("config", GENERATOR_PID)
def test_the_clustered_pid_of_interactions_features_matches_its_generator(config):
  """k-means on each modality's 8,000 training features (16 clusters: the 16 sign patterns of its
  4 bits) and the discrete PID of the clusters and labels give the generator's PID, each term
  within 0.01 bits plus the plug-in bias bound (cells − 1)/(2N ln 2) (0.046 bits for binary
  labels, 0.092 for mixed's 4 classes), and the dominant term by far (bug caught: a
  modality's clusters drawn from the other one's features, which turns synergy into nothing)."""
  structure = interactions.STRUCTURES[config]
  examples = [interactions.make_example(config, interactions.Interactions.SEED, 0, index)
              for index in range(8000)]
  features = {m: np.stack([e[m] for e in examples]) for m in structure.modalities}
  labels = np.array([e["label"] for e in examples])
  found = _terms(pid.clustered_pid(features["a"], features["b"], labels, clusters=16))
  cells = 16 * 16 * structure.num_classes
  np.testing.assert_allclose(found, GENERATOR_PID[config],
                             atol=0.01 + (cells - 1) / (2 * len(labels) * math.log(2)))
  assert np.argmax(found) == np.argmax(GENERATOR_PID[config])


def test_kmeans_recovers_separated_clusters_exactly():
  """Four well-separated blobs of different sizes: every row goes to its blob's cluster, and the
  centroids are the blobs' means (bug caught: an empty or merged cluster from a single start)."""
  rng = np.random.default_rng(0)
  centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], np.float32)
  truth = rng.choice(4, size=400, p=[0.1, 0.2, 0.3, 0.4])
  x = centres[truth] + rng.uniform(-1, 1, size=(400, 2)).astype(np.float32)
  centroids, assignment = pid.kmeans(x, 4)
  relabel = {int(t): int(a) for t, a in zip(truth, assignment)}
  assert len(set(relabel.values())) == 4 and all(relabel[int(t)] == a
                                                 for t, a in zip(truth, assignment))
  for blob, cluster in relabel.items():
    np.testing.assert_allclose(centroids[cluster], x[truth == blob].mean(0), atol=1e-4)


@pytest.mark.parametrize("table,message", [
    (np.ones((2, 2)) / 4, "three non-empty axes"),
    (np.full((2, 2, 2), 0.25), "sums to 2"),
    (np.array([[[0.75, -0.25]], [[0.25, 0.25]]]), "minimum -0.25")])
def test_a_table_that_is_not_a_joint_distribution_is_a_one_line_error(table, message):
  with pytest.raises(DataError, match=message):
    pid.pid(table)
