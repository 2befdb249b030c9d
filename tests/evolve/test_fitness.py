"""Automatic fitness: novelty's archive state, kept compact and exact across snapshots."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from evolve.fitness import NoveltyFitness, archive_levels, fitness_from_ratings


def pictures(seed: int, n: int = 6, size: int = 40) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_a_resumed_novelty_run_scores_exactly_as_an_unbroken_one() -> None:
    fitness = NoveltyFitness(archive_size=8)
    unbroken, state = [], {}
    for seed in range(6):
        scores, state = fitness.evaluate(pictures(seed), state)
        unbroken.append(scores)
    resumed, state = [], {}
    for seed in range(6):
        # As a resumed run sees it: the state went through the snapshot's JSON.
        scores, state = NoveltyFitness(archive_size=8).evaluate(pictures(seed), json.loads(json.dumps(state)))
        resumed.append(scores)
    assert resumed == unbroken
    assert state["archive"]["rows"] == 8  # capped at archive_size
    # Both runs read the same stored form, so the equality alone cannot catch a lossy one:
    # every archived entry is exactly the levels of a picture the run scored.
    seen = {row.tobytes() for seed in range(6) for row in NoveltyFitness.levels(pictures(seed))}
    archived = archive_levels(state, state["archive"]["width"])
    assert len(archived) == 8 and all(row.tobytes() in seen for row in archived)


def test_the_archive_state_is_a_small_fraction_of_the_numbers_it_replaced() -> None:
    fitness = NoveltyFitness(archive_size=256, per_generation=16)
    state: dict = {}
    for seed in range(16):
        _, state = fitness.evaluate(pictures(seed, n=16), state)
    levels = NoveltyFitness.levels(pictures(0, n=1))
    as_numbers = json.dumps(np.round(np.tile(levels / 255.0, (256, 1)), 4).tolist())
    # Random pixels barely deflate: this is the worst case, still under a third.
    assert len(json.dumps(state)) < len(as_numbers) / 3


def test_an_archive_stored_as_rounded_numbers_reads_back_to_the_same_levels() -> None:
    first, batch = pictures(1), pictures(2)
    _, state = NoveltyFitness(per_generation=6).evaluate(first, {})  # archives all six
    # How runs stored it before: each level / 255, rounded to four places.
    old_state = {"archive": np.round(NoveltyFitness.levels(first) / 255.0, 4).tolist()}
    fitness = NoveltyFitness()
    assert fitness.evaluate(batch, old_state)[0] == fitness.evaluate(batch, state)[0]


def test_an_unreadable_archive_starts_afresh_instead_of_failing_the_run() -> None:
    fitness = NoveltyFitness()
    batch = pictures(3)
    fresh = fitness.evaluate(batch, {})
    for archive in ({"rows": 2, "width": 768, "deflated": "not base64!"}, [[0.5, "x"]], "junk", {"rows": 1}):
        assert fitness.evaluate(batch, {"archive": archive}) == fresh


def test_ratings_fold_into_fitness_with_picks_above_any_score() -> None:
    assert fitness_from_ratings(3, {0: 2.0, 1: 5.0}, {0}) == [6.0, 5.0, 0.5]
