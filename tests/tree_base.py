"""A tree-structured toy base whose KL-optimal policy pi*(y) ∝ pi_base(y) exp(beta r(y)) can be
written down: the exact case the guidance rules and blockwise search are checked against. The tree's
decoders are the functions the decoders call, fed by tables instead of models."""

import itertools

import jax.numpy as jnp
import numpy as np

from vas_jax import guidance, sampling

ATOMS = (-1.0, -0.5, 0.0, 0.5, 1.0)


class Tree:
    """A base over V tokens and D steps: a next-token distribution at every prefix (distinct
    probabilities, so the top-k has no ties) and a reward on an atom at every leaf.

    Under the first token 0 every leaf's reward is 0; under token 1 the reward is a function of the
    second token with the same mean, 0, under the base: siblings with one mean and two spreads."""

    def __init__(self, vocab=3, depth=3, seed=0):
        rng = np.random.default_rng(seed)
        self.V, self.D = vocab, depth
        self.probs = {}
        for d in range(depth):
            for prefix in itertools.product(range(vocab), repeat=d):
                p = rng.dirichlet(np.ones(vocab))
                while np.min(np.abs(np.subtract.outer(p, p))[~np.eye(vocab, dtype=bool)]) < 0.02:
                    p = rng.dirichlet(np.ones(vocab))
                self.probs[prefix] = p
        self.probs[(1,)] = np.array([0.5, 0.3, 0.2] + [0.0] * (vocab - 3)) if vocab == 3 else self.probs[(1,)]
        self.reward = {}
        for leaf in itertools.product(range(vocab), repeat=depth):
            if leaf[0] == 0:
                r = 0.0
            elif leaf[0] == 1 and vocab == 3:
                r = (-0.5, 0.5, 0.5)[leaf[1]]
            else:
                r = ATOMS[rng.integers(len(ATOMS))]
            self.reward[leaf] = r
        self.leaves = list(itertools.product(range(vocab), repeat=depth))
        self._returns = {}

    def step_probs(self, prefix, k=None):
        """The (truncated to its top k and renormalised) base's next-token distribution."""
        p = self.probs[tuple(prefix)].copy()
        if k is not None:
            p[np.argsort(-p)[k:]] = 0.0
        return p / p.sum()

    def returns(self, prefix, k=None):
        """The exact distribution over the atoms of the final reward under the (truncated) base."""
        prefix = tuple(prefix)
        if (prefix, k) in self._returns:
            return self._returns[prefix, k]
        if len(prefix) == self.D:
            out = np.zeros(len(ATOMS))
            out[ATOMS.index(self.reward[prefix])] = 1.0
        else:
            p = self.step_probs(prefix, k)
            out = sum(p[a] * self.returns(prefix + (a,), k) for a in range(self.V) if p[a] > 0)
        self._returns[prefix, k] = out
        return out

    def optimal(self, beta, k=None):
        """pi* over the leaves, in float64: the (truncated) base times exp(beta r), normalised."""
        w = np.array([self.base_prob(leaf, k) * np.exp(beta * self.reward[leaf]) for leaf in self.leaves])
        return w / w.sum()

    def base_prob(self, leaf, k=None):
        return float(np.prod([self.step_probs(leaf[:d], k)[leaf[d]] for d in range(self.D)]))

    def guided_logits(self, prefixes, beta, rule, k, restrict):
        """The decoders' step on a batch of prefixes: the base's logits, its top-k, each candidate's
        return distribution as a distributional head's logits, the rule, the VAS rule."""
        base = np.log(np.stack([self.probs[tuple(p)] for p in prefixes])).astype(np.float32)
        top_vals, top_idx = sampling.top_k(jnp.asarray(base), k)
        with np.errstate(divide="ignore"):
            dist = np.log([[self.returns(tuple(p) + (int(a),), k if restrict else None) for a in row]
                           for p, row in zip(prefixes, np.asarray(top_idx))]).astype(np.float32)  # fmt: skip
        b = jnp.full((len(prefixes), 1), beta, jnp.float32)
        soft = jnp.full((len(prefixes),), rule == "soft")
        cand, weights = guidance.candidate_values([jnp.asarray(dist)], ("distributional",), (ATOMS,), b, soft)
        aug, _ = guidance.vas_logits(jnp.asarray(base), top_vals, top_idx, cand, weights, restrict)
        return base, aug

    def policy(self, beta, rule, k, restrict):
        """The guided policy's exact probability of every leaf."""
        out = []
        for leaf in self.leaves:
            prob = 1.0
            for d in range(self.D):
                _, aug = self.guided_logits([leaf[:d]], beta, rule, k, restrict)
                a = np.asarray(aug[0], np.float64)
                prob *= float(np.exp(a[leaf[d]] - a.max()) / np.exp(a - a.max()).sum())
            out.append(prob)
        return np.array(out)
