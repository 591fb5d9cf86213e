"""Task plug-ins: small declarative objects that yield items and score stored outputs."""
from bench.registry import Registry

REGISTRY = Registry("task", {
    "spoken-qa": "tasks.spoken_qa:SpokenQA",
}, entry_point_group="audiochat_bench.tasks")
