"""Search strategies, by name: exhaustive, greedy, evolutionary (and auto, which picks one).

Every strategy works on rows of option indices and scores whole batches at
once through ``Problem.evaluate``, which also keeps every evaluated variant
(for the Pareto front and the finalists). All randomness comes from one
``numpy`` generator seeded by the user's seed: same seed, same result.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from hwopt.search.objective import Objective
from hwopt.search.space import Space
from hwopt.search.variants import VariantModel

EXHAUSTIVE_LIMIT = 50_000  # auto: enumerate spaces up to this many variants
_CHUNK = 4096

Progress = Callable[[str, int, int], None]


@dataclass
class Problem:
    space: Space
    model: VariantModel
    objective: Objective
    seed: int = 0
    progress: Progress | None = None
    evaluated: int = 0
    # Option indices each variable may take (default: the space's); a restricted search (fewer rules)
    # keeps the same indices so the kernel tables stay valid.
    restrict: list[list[int]] | None = None
    # Predicted figures beyond latency and memory (``FidelityModel``: predicted fidelity and rel-L2),
    # constrained by the objective.
    fidelity: object | None = None
    _rows: list[np.ndarray] = field(default_factory=list)
    _fit: list[np.ndarray] = field(default_factory=list)

    def evaluate(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        figures = self.model.evaluate(rows)
        if self.fidelity is not None:
            figures.update(self.fidelity.evaluate(rows))
        fitness = self.objective.fitness(figures)
        self._rows.append(rows)
        self._fit.append(fitness)
        self.evaluated += len(rows)
        return fitness

    def archive(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct evaluated variants and their fitness, best first (ties: lexicographic)."""
        rows = np.concatenate(self._rows)
        fit = np.concatenate(self._fit)
        rows, first = np.unique(rows, axis=0, return_index=True)
        fit = fit[first]
        order = np.lexsort((*rows.T[::-1], fit))
        return rows[order], fit[order]

    def allowed(self) -> list[np.ndarray]:
        lists = self.restrict if self.restrict is not None else [v.allowed for v in self.space.variables]
        return [np.array(a, dtype=np.int64) for a in lists]

    @property
    def size(self) -> int:
        return int(np.prod([len(a) for a in self.allowed()], dtype=np.float64))

    @property
    def start(self) -> np.ndarray:
        return np.array([a[0] for a in self.allowed()], dtype=np.int64)


def exhaustive(problem: Problem) -> None:
    allowed = [list(a) for a in problem.allowed()]
    total = problem.size
    product = itertools.product(*allowed)
    done = 0
    while True:
        chunk = list(itertools.islice(product, _CHUNK))
        if not chunk:
            break
        problem.evaluate(np.array(chunk, dtype=np.int64).reshape(len(chunk), len(allowed)))
        done += len(chunk)
        if problem.progress:
            problem.progress("exhaustive search", done, total)


def _neighbours(problem: Problem, current: np.ndarray) -> np.ndarray:
    rows = []
    for vi, options in enumerate(problem.allowed()):
        for option in options:
            if option != current[vi]:
                row = current.copy()
                row[vi] = option
                rows.append(row)
    return np.array(rows, dtype=np.int64).reshape(len(rows), len(current))


def greedy(problem: Problem, start: np.ndarray | None = None) -> np.ndarray:
    """Coordinate descent from the start: take the best single change while it improves."""
    current = problem.start if start is None else np.array(start, dtype=np.int64)
    best = problem.evaluate(current[None])[0]
    steps = 0
    while True:
        candidates = _neighbours(problem, current)
        if not len(candidates):
            return current
        fitness = problem.evaluate(candidates)
        i = int(np.argmin(fitness))
        steps += 1
        if problem.progress:
            problem.progress("greedy search", steps, len(problem.space.variables))
        if fitness[i] >= best:
            return current
        current, best = candidates[i], fitness[i]


def evolutionary(problem: Problem, shots: int = 4, population: int = 64, generations: int = 60,
                 elite: int = 4) -> None:
    """Multishot genetic search: each shot from its own seeded population, seeded with greedy's answer.

    Tournament selection, uniform crossover, per-gene mutation to another allowed option.
    """
    rng = np.random.default_rng(problem.seed)
    allowed = problem.allowed()
    n = len(allowed)
    sizes = np.array([len(a) for a in allowed])
    seed_row = greedy(problem)  # a good start, and the guarantee: never worse than greedy
    start = problem.start
    total = shots * generations

    def random_rows(count: int) -> np.ndarray:
        picks = (rng.random((count, n)) * sizes).astype(np.int64)
        return np.stack([allowed[j][picks[:, j]] for j in range(n)], axis=1) if n else np.zeros((count, 0), np.int64)

    for shot in range(shots):
        pop = np.concatenate([start[None], seed_row[None], random_rows(population - 2)])
        fit = problem.evaluate(pop)
        for gen in range(generations):
            # Tournament of 3, then uniform crossover between pairs of winners.
            contenders = rng.integers(0, population, (population, 3))
            winners = contenders[np.arange(population), np.argmin(fit[contenders], axis=1)]
            parents = pop[winners]
            mates = parents[rng.permutation(population)]
            mask = rng.random((population, n)) < 0.5
            children = np.where(mask, parents, mates)
            # Mutation: each gene with probability 1/n (at least one expected change per child).
            mutate = rng.random((population, n)) < 1.0 / max(n, 1)
            children = np.where(mutate, random_rows(population), children)
            child_fit = problem.evaluate(children)
            # Elitism: the best of the previous generation survive unchanged.
            keep = np.argsort(fit, kind="stable")[:elite]
            worst = np.argsort(child_fit, kind="stable")[::-1][:elite]
            children[worst], child_fit[worst] = pop[keep], fit[keep]
            pop, fit = children, child_fit
            if problem.progress:
                problem.progress("evolutionary search", shot * generations + gen + 1, total)


STRATEGIES: dict[str, Callable[[Problem], object]] = {
    "exhaustive": exhaustive,
    "greedy": greedy,
    "evolutionary": evolutionary,
}


def resolve_strategy(name: str, space: Space, size: int | None = None) -> str:
    from hwopt.errors import HwoptError

    size = space.size if size is None else size
    if name == "auto":
        return "exhaustive" if size <= EXHAUSTIVE_LIMIT else "evolutionary"
    if name not in STRATEGIES:
        raise HwoptError(f"unknown strategy {name!r} (strategies: auto, {', '.join(STRATEGIES)})")
    if name == "exhaustive" and size > 10 * EXHAUSTIVE_LIMIT:
        raise HwoptError(f"the space has {size:,} variants: too many to enumerate "
                         f"(use --strategy evolutionary, or restrict the rule set)")
    return name


def run_strategy(name: str, problem: Problem) -> None:
    STRATEGIES[name](problem)
