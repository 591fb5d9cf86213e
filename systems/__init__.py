"""System plug-ins. Each entry maps a name to a factory `f(ctx) -> System`, imported lazily."""
from bench.registry import Registry

REGISTRY = Registry("system", {
    "text": "systems.text:build",
    "cascade": "systems.cascade:build",
    "cascade-whisper": "systems.cascade:build_whisper",
    "audiochatllama": "systems.audiochatllama.system:build",  # the token bridge
    "audiochatllama-continuous": "systems.audiochatllama.system:build_continuous",  # the paper's projector
    "audiochatllama-whisper": "systems.audiochatllama.system:build_whisper",  # the token bridge on Whisper
    "audiochatllama-whisper-continuous": "systems.audiochatllama.system:build_whisper_continuous",
    "audiochatllama-lora": "systems.audiochatllama.system:build_lora",
    "cascade-tokens": "systems.cascade:build_tokens",
    "cascade-whisper-tokens": "systems.cascade:build_whisper_tokens",  # the token head on Whisper's encoder
    "openai": "systems.endpoint:build",
    "hf-audio": "systems.hf_audio:build",  # hf-audio:MODEL[+text|+asr=SYSTEM], a family
}, entry_point_group="audiochat_bench.systems")

# Flags of `run` and `chat` from before `--system-args`, kept as documented aliases of it: each sets
# these systems' arguments. "value": a switch that sets that value; "legacy": the top-level option a
# saved run config held it in (old run directories are read through this), "legacy_when": the saved
# value that meant the switch was on.
ARG_ALIASES = {
    "asr": {"help": "= --system-args cascade:asr=DIR (a CTC ASR model directory)", "targets": [("cascade", "asr")]},
    "asr_decoder": {"help": "= --system-args cascade:decoder=auto|greedy|beam", "targets": [("cascade", "decoder")]},
    "whisper": {"help": "= --system-args cascade-whisper:whisper=DIR", "targets": [("cascade-whisper", "whisper")]},
    "e2e": {"help": "= --system-args audiochatllama:checkpoint=DIR", "targets": [("audiochatllama", "checkpoint")]},
    "e2e_whisper": {"help": "= --system-args audiochatllama-whisper:checkpoint=DIR",
                    "targets": [("audiochatllama-whisper", "checkpoint")]},
    "e2e_lora": {"help": "= --system-args audiochatllama-lora:checkpoint=DIR",
                 "targets": [("audiochatllama-lora", "checkpoint")]},
    "no_transcript_warning": {"help": "= --system-args cascade:transcript_warning=false (and for cascade-whisper, "
                                      "cascade-tokens, cascade-whisper-tokens)", "value": "false",
                              "targets": [("cascade", "transcript_warning"), ("cascade-whisper", "transcript_warning"),
                                          ("cascade-tokens", "transcript_warning"),
                                          ("cascade-whisper-tokens", "transcript_warning")],
                              "legacy": "transcript_warning", "legacy_when": False},
}

# Training recipes behind `audiochat-bench train NAME [args]`: each maps to a `main(argv) -> int`.
TRAINERS = Registry("trainer", {
    "asr": "systems.asr.train:main",
    "lm": "systems.asr.lm_recipe:main",
    "e2e": "systems.audiochatllama.train:main",
    "bridge": "systems.audiochatllama.train_bridge:main",
})

# Data tools behind `audiochat-bench data NAME [args]`.
DATA_TOOLS = Registry("data tool", {
    "responses": "systems.audiochatllama.data:main",
})

# Commands the harness calls by name: `perf` without --systems measures the chat LLM's decode loop.
TOOLS = Registry("tool", {
    "llm-perf": "systems.perf:llm_throughput",
})
