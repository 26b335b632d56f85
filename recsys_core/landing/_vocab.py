"""Vocabulary of the synthetic catalog: one theme per taste cluster, with its own words.

Each cluster's titles, descriptions, categories and tags draw on that cluster's words only (plus a
few shared adjectives), so a text encoder can tell the clusters apart.
"""

from __future__ import annotations

import numpy as np

__all__ = ["THEMES", "item_text"]

#: (category path, words) of each cluster; the generator uses the first ``n_clusters``.
THEMES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Outdoor > Camping",
        ("tent", "trail", "hiking", "backpack", "campfire", "summit", "compass", "lantern"),
    ),
    (
        "Kitchen > Cookware",
        ("skillet", "recipe", "knife", "baking", "espresso", "spatula", "pantry", "simmer"),
    ),
    (
        "Electronics > Audio",
        ("bluetooth", "charger", "wireless", "battery", "headphones", "usb", "bass", "speaker"),
    ),
    (
        "Books > Fantasy",
        ("dragon", "wizard", "kingdom", "quest", "sorcery", "elven", "prophecy", "sword"),
    ),
    (
        "Sports > Fitness",
        ("dumbbell", "yoga", "cardio", "protein", "kettlebell", "stretch", "workout", "treadmill"),
    ),
    (
        "Home > Garden",
        ("seedling", "compost", "trowel", "perennial", "watering", "mulch", "greenhouse", "tulip"),
    ),
    (
        "Music > Instruments",
        ("guitar", "chord", "amplifier", "drum", "melody", "piano", "string", "tempo"),
    ),
    (
        "Pets > Supplies",
        ("puppy", "leash", "kibble", "aquarium", "catnip", "collar", "chew", "grooming"),
    ),
    (
        "Toys > Games",
        ("puzzle", "blocks", "plush", "boardgame", "dice", "robot", "playset", "marble"),
    ),
    (
        "Beauty > Skincare",
        ("serum", "lipstick", "moisturizer", "fragrance", "mascara", "cleanser", "lotion", "toner"),
    ),
    (
        "Travel > Luggage",
        ("suitcase", "passport", "carry-on", "itinerary", "luggage", "voyage", "adapter", "pillow"),
    ),
    (
        "Office > Stationery",
        (
            "notebook",
            "stapler",
            "ballpoint",
            "planner",
            "desk",
            "folder",
            "highlighter",
            "envelope",
        ),
    ),
)

_ADJECTIVES = ("Classic", "Compact", "Deluxe", "Essential", "Premium", "Rugged", "Smart", "Ultra")
_UPDATES = ("improved", "redesigned", "lighter", "restocked", "bundled", "refreshed")


def item_text(rng: np.random.Generator, cluster: int, serial: int) -> dict[str, str]:
    """Title, description, categories and tags of one item of ``cluster``.

    About one description in ten has a quoted phrase and a line break, so CSV writers must quote
    it and readers must handle a multi-line field.
    """
    path, words = THEMES[cluster]
    w = [words[i] for i in rng.choice(len(words), size=4, replace=False)]
    adj = _ADJECTIVES[int(rng.integers(len(_ADJECTIVES)))]
    title = f"{adj} {w[0].capitalize()} {w[1].capitalize()} {serial:03d}"
    description = (
        f"A {adj.lower()} {w[0]} made for {w[1]} fans. Pairs well with a {w[2]}, "
        f"and every {w[3]} lover will enjoy it."
    )
    if rng.random() < 0.1:
        description += f'\nReviewers call it "the best {w[0]} of the season".'
    leaf = w[0].capitalize()
    return {
        "title": title,
        "description": description,
        "categories": f"{path} > {leaf}",
        "tags": ", ".join(sorted(w[:3])),
    }


def updated_text(rng: np.random.Generator, cluster: int, text: dict[str, str]) -> dict[str, str]:
    """A changed version of ``text`` (new sentence in the description, new tag)."""
    words = THEMES[cluster][1]
    word = words[int(rng.integers(len(words)))]
    change = _UPDATES[int(rng.integers(len(_UPDATES)))]
    return {
        **text,
        "description": f"{text['description']} Now {change}, with a matching {word}.",
        "tags": ", ".join(sorted({*text["tags"].split(", "), word})),
    }
