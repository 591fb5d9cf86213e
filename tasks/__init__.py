"""Task plug-ins: small declarative objects that yield items and score stored outputs.

An entry is "module:Class", or ("module:Class", {kwargs}) for one class configured per name. A
task whose name takes an argument (`manifest:PATH`) gets it as its constructor's first argument.
"""
from bench.registry import Registry

REGISTRY = Registry("task", {
    "spoken-qa": "tasks.builtin:SpokenQA",
    "typed-qa": "tasks.builtin:TypedQA",
    "response-ppl": "tasks.builtin:ResponsePPL",
    "asr": "tasks.builtin:ASR",
    "translate-en-fr": ("tasks.builtin:Translation", {"target": "fr"}),
    "translate-en-de": ("tasks.builtin:Translation", {"target": "de"}),
    "translate-en-es": ("tasks.builtin:Translation", {"target": "es"}),
    "summarize": "tasks.builtin:Summarization",
    "multiturn": "tasks.builtin:MultiTurn",
    "asr-fleurs-en": ("tasks.builtin:RealASR", {"dataset": "fleurs"}),
    "asr-ljspeech": ("tasks.builtin:RealASR", {"dataset": "ljspeech"}),
    "asr-librivox": ("tasks.builtin:RealASR", {"dataset": "librivox"}),
    "fleurs-translate-en-fr": ("tasks.builtin:FleursTranslation", {"target": "fr"}),
    "fleurs-translate-en-de": ("tasks.builtin:FleursTranslation", {"target": "de"}),
    "fleurs-translate-en-es": ("tasks.builtin:FleursTranslation", {"target": "es"}),
    "manifest": "tasks.manifest:ManifestTask",  # manifest:PATH (any kind: qa, asr, translate, ...)
    "squad": "tasks.text_sets:SquadTask",  # squad:PATH (SQuAD-1.1 or HeySQuAD JSON)
    "nq-open": "tasks.text_sets:NQOpenTask",  # nq-open:PATH
    "scitldr": "tasks.text_sets:SciTLDRTask",  # scitldr:PATH
    "hf": "tasks.hf:HFASRTask",  # hf:DATASET_ID[:key=value...]
    # public benchmarks by name (tasks/benchmarks.py; the `hub` extra, a local copy or the HF cache)
    "voicebench": "tasks.benchmarks:VoiceBench",  # voicebench:sd-qa|openbookqa|mmsu|ifeval|alpacaeval|commoneval
    "heysquad": "tasks.benchmarks:HeySQuAD",  # heysquad:human
    "librispeech": "tasks.benchmarks:LibriSpeech",  # librispeech:test-clean|test-other
    "covost2": "tasks.benchmarks:CoVoST2",  # covost2:en-de, ...
    "fleurs": "tasks.benchmarks:Fleurs",  # fleurs:en, ...
    "heysquad-human-transcribed": ("tasks.benchmarks:HeySQuADText", {"form": "human-transcribed"}),
    "heysquad-machine-transcribed": ("tasks.benchmarks:HeySQuADText", {"form": "machine-transcribed"}),
}, entry_point_group="audiochat_bench.tasks")

# What the harness asks this package for besides tasks (bench/plugins.py), by name like the tasks.
TOOLS = Registry("task tool", {
    "suites": "tasks.suites:SUITES",  # the built-in suites: name → preset
    "suite-file": "tasks.suites:suite_from_file",  # a user's suite file (TOML) → preset
    "kind-of": "tasks.manifest:kind_of",  # task → (kind, target language) its items are scored as
    "benchmarks": "tasks.benchmarks:availability",  # the public benchmarks and where each is available
})


def needs_argument(name: str) -> bool:
    """Whether task `name` is only usable as `name:ARG` (`manifest:PATH`, `hf:DATASET_ID`): its
    constructor's first parameter has no default. Listings of "every task" skip these."""
    import inspect

    params = list(inspect.signature(REGISTRY.get(name)).parameters.values())
    return bool(params) and params[0].default is inspect.Parameter.empty and params[0].kind in (
        inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
