"""Prompt modifiers that diffusion mutations add, swap and drop, grouped by what they change.

A modifier is a short phrase appended to the user's prompt as its own weighted fragment. The
groups matter to the operators: a swap replaces a lighting phrase with another lighting phrase,
so one mutation changes one aspect of the picture instead of scrambling several at once.
Fragments whose text is not in this vocabulary are the user's own words: mutations reweight
them but never drop or replace them.
"""

from __future__ import annotations

import numpy as np

MODIFIERS: dict[str, tuple[str, ...]] = {
    "subject": (
        "close-up portrait",
        "wide landscape",
        "still life",
        "aerial view",
        "in a misty forest",
        "underwater",
        "in a city at night",
        "on a mountain top",
        "in a desert",
        "surrounded by flowers",
        "in outer space",
        "by the sea",
    ),
    "style": (
        "art nouveau",
        "cubism",
        "surrealism",
        "impressionism",
        "minimalism",
        "baroque",
        "ukiyo-e",
        "cyberpunk",
        "art deco",
        "psychedelic",
        "gothic",
        "bauhaus",
    ),
    "lighting": (
        "golden hour",
        "soft diffuse light",
        "dramatic rim light",
        "neon glow",
        "moonlight",
        "volumetric light",
        "candlelight",
        "harsh midday sun",
        "studio lighting",
        "backlit silhouette",
    ),
    "medium": (
        "oil painting",
        "watercolor",
        "pencil sketch",
        "charcoal drawing",
        "35mm photograph",
        "linocut print",
        "stained glass",
        "3d render",
        "pixel art",
        "gouache",
        "mosaic",
        "ink wash",
    ),
}

CATEGORIES: tuple[str, ...] = tuple(MODIFIERS)

# Reverse index: modifier text -> its category, for telling modifiers from the user's words.
_CATEGORY_OF: dict[str, str] = {
    text: category for category, texts in MODIFIERS.items() for text in texts
}


def category_of(text: str) -> str | None:
    """Return the modifier category of ``text``, or None when it is the user's own phrase."""
    return _CATEGORY_OF.get(text.strip().lower())


def pick_modifier(
    rng: np.random.Generator, category: str | None = None, exclude: frozenset[str] = frozenset()
) -> str | None:
    """Draw a modifier, from ``category`` if given, avoiding the texts in ``exclude``.

    Args:
        rng: The source of randomness.
        category: One of ``CATEGORIES``; None draws the category uniformly first.
        exclude: Texts already in the prompt, so a prompt never holds a phrase twice.

    Returns:
        The modifier text, or None when every candidate is excluded.
    """
    if category is None:
        category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    candidates = [text for text in MODIFIERS[category] if text not in exclude]
    if not candidates:
        return None
    return candidates[int(rng.integers(len(candidates)))]


def all_words() -> list[str]:
    """Every distinct word used by the vocabulary, for building a tiny test tokenizer."""
    words = {word for texts in MODIFIERS.values() for text in texts for word in text.split()}
    return sorted(words)
