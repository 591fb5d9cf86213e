"""Conditions: deterministic changes to an item's audio (or text), applied identically for every
system. Each is seeded by (item id, condition name) so that all systems hear the same corruption.
"""
from __future__ import annotations

import hashlib
from typing import Callable

from bench.registry import Registry
from bench.types import Item

ConditionFn = Callable[[Item, int], Item]


def seed_for(item_id: str, condition: str) -> int:
    """A 63-bit seed derived from (item id, condition): stable across processes and machines."""
    return int.from_bytes(hashlib.sha256(f"{item_id}\x1f{condition}".encode()).digest()[:8], "big") >> 1


def clean(item: Item, seed: int) -> Item:
    """No change: the item as authored."""
    return item


CONDITIONS = Registry("condition", {"clean": "bench.conditions:clean"})


def apply(condition: str, item: Item) -> Item:
    fn: ConditionFn = CONDITIONS.get(condition)
    return fn(item, seed_for(item.id, condition))
