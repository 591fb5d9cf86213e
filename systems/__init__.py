"""System plug-ins. Each entry maps a name to a factory `f(ctx) -> System`, imported lazily."""
from bench.registry import Registry

REGISTRY = Registry("system", {
    "text": "systems.text:build",
    "cascade": "systems.cascade:build",
    "cascade-whisper": "systems.cascade:build_whisper",
    "audiochatllama": "systems.audiochatllama.system:build",
    "audiochatllama-whisper": "systems.audiochatllama.system:build_whisper",
    "audiochatllama-lora": "systems.audiochatllama.system:build_lora",
}, entry_point_group="audiochat_bench.systems")

# Training recipes behind `audiochat-bench train NAME [args]`: each maps to a `main(argv) -> int`.
TRAINERS = Registry("trainer", {
    "asr": "systems.asr.train:main",
    "lm": "systems.asr.lm:main",
    "e2e": "systems.audiochatllama.train:main",
    "bridge": "systems.audiochatllama.train_bridge:main",
})

# Data tools behind `audiochat-bench data NAME [args]`.
DATA_TOOLS = Registry("data tool", {
    "responses": "systems.audiochatllama.data:main",
})
