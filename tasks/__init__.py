"""Task plug-ins: small declarative objects that yield items and score stored outputs."""
from bench.registry import Registry

REGISTRY = Registry("task", {
    "spoken-qa": "tasks.builtin:SpokenQA",
    "typed-qa": "tasks.builtin:TypedQA",
    "response-ppl": "tasks.builtin:ResponsePPL",
    "asr": "tasks.builtin:ASR",
    "translate-en-fr": "tasks.builtin:TranslateFr",
    "translate-en-de": "tasks.builtin:TranslateDe",
    "translate-en-es": "tasks.builtin:TranslateEs",
    "summarize": "tasks.builtin:Summarization",
    "multiturn": "tasks.builtin:MultiTurn",
    "asr-fleurs-en": "tasks.builtin:FleursASR",
    "asr-ljspeech": "tasks.builtin:LJSpeechASR",
    "asr-librivox": "tasks.builtin:LibriVoxASR",
    "fleurs-translate-en-fr": "tasks.builtin:FleursFr",
    "fleurs-translate-en-de": "tasks.builtin:FleursDe",
    "fleurs-translate-en-es": "tasks.builtin:FleursEs",
    "manifest": "tasks.builtin:ManifestTask",  # manifest:PATH
}, entry_point_group="audiochat_bench.tasks")
