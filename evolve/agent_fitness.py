"""A learned taste as the fitness of a batch run: ``imagery run RUN --fitness preference:OTHER``.

``PreferenceFitness`` fits the agent's preference model on every rating a person gave in
another run (or one branch of it) and scores new images with it. It sees only pictures, as
every automatic fitness does: the features are the image statistics and colour layout of the
stored thumbnails when learning, and of the rendered images when scoring. That works for any
generator and renders nothing while learning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from evolve import agent_data
from evolve.agent_blas import single_blas_thread
from evolve.agent_features import FeatureMaker
from evolve.embeddings import make_extractor
from evolve.fitness import FitnessError
from spark_runtime.image_codec import decode
from spark_runtime.store import Store

#: Every rated generation counts when learning for a batch run.
_ALL = 1 << 30


class PreferenceFitness:
    """Scores images 0..5 by a preference model learned from a run's ratings.

    2.5 is as good as the average candidate the person rated; higher is what they would
    prefer. The scale never saturates, so selection keeps working when a batch run breeds
    images better than anything that was rated.

    Args:
        fitted: the fitted model.
        maker: the image features it was fitted on.
        spec: the fitness spec, saved with each snapshot of the batch run.
    """

    def __init__(self, fitted: agent_data.Fitted, maker: FeatureMaker, spec: str) -> None:
        self.fitted = fitted
        self.maker = maker
        self.spec = spec

    @classmethod
    def from_store(
        cls,
        store: Store,
        ref: str,
        feature_size: int = 32,
        extractor: str = "stats",
        l2: float = 1.0,
    ) -> PreferenceFitness:
        """Learn from run ``RUN`` (every branch) or ``RUN:BRANCH`` (that branch's line).

        Raises:
            FitnessError: the run or branch has no ratings that compare anything.
            StoreError: no such run or branch.
        """
        run_ref, _, branch = ref.partition(":")
        run = store.get_run(run_ref)
        branches = [store.get_branch(run.id, branch)] if branch else store.list_branches(run.id)
        snapshots: dict[str, Any] = {}
        for b in branches:
            for s in store.history(b):
                snapshots.setdefault(s.id, s)
        ordered = sorted(snapshots.values(), key=lambda s: (s.generation, s.id))
        rated = agent_data.rated_snapshots(store, ordered, _ALL)
        where = f"run {run.name!r}" + (f" branch {branch!r}" if branch else "")
        if not rated:
            raise FitnessError(
                f"{where} has no ratings to learn a preference from: rate some generations first"
            )
        try:
            image_extractor = None if extractor == "stats" else make_extractor(extractor)
        except ValueError as exc:
            raise FitnessError(str(exc)) from None
        maker = FeatureMaker(feature_size, image_extractor, genome=False)
        thumbs: dict[str, np.ndarray] = {}

        def rows(r: agent_data.RatedSnapshot) -> np.ndarray:
            missing = [h for h in dict.fromkeys(r.snapshot.thumbs) if h not in thumbs]
            if missing:
                images = [decode(store.objects.get(h)) for h in missing]
                thumbs.update(zip(missing, maker.image_part(images), strict=True))
            return np.stack([thumbs[h] for h in r.snapshot.thumbs])

        fitted = agent_data.fit(rated, rows, l2, maker.name)
        if not fitted.model.is_fitted:
            raise FitnessError(f"{where} has ratings but none that prefer one image to another")
        return cls(fitted, maker, f"preference:{ref}")

    def evaluate(
        self, images: Sequence[Image.Image], state: dict[str, Any]
    ) -> tuple[list[float], dict[str, Any]]:
        """Scores 0..5 per image; the state is passed through unchanged."""
        if not images:
            return [], state
        x = self.maker.image_part(list(images))
        with single_blas_thread():
            utility = self.fitted.model.utility(x)
        return [float(v) for v in self.fitted.squash(utility)], state
