"""System plug-ins. Each entry maps a name to a factory `f(ctx) -> System`, imported lazily."""
from bench.registry import Registry

REGISTRY = Registry("system", {
    "text": "systems.text:build",
}, entry_point_group="audiochat_bench.systems")
