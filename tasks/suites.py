"""Named suites: which systems, tasks and conditions a run compares, and how many items.

Systems listed under `optional_systems` are skipped with a warning when they cannot be built (no
trained checkpoint yet, or the public data is absent), so a suite runs on whatever is available.
"""

BUILTIN = ["spoken-qa", "typed-qa", "response-ppl", "asr", "translate-en-fr", "translate-en-de",
           "translate-en-es", "summarize", "multiturn"]
SPEECH_SYSTEMS = ["text", "cascade", "cascade-whisper", "audiochatllama", "audiochatllama-whisper"]
ABLATIONS = ["audiochatllama-lora"]  # in `full` only

SUITES: dict[str, dict] = {
    "smoke": {"systems": ["text", "cascade", "cascade-whisper", "audiochatllama"],
              "tasks": ["spoken-qa", "asr", "response-ppl"], "conditions": ["clean"], "limit": 12,
              "about": "a few minutes: the topline, both cascades and the default AudioChatLlama on a few "
                       "QA, ASR and response-perplexity items (the CI regression gate)"},
    "default": {"systems": SPEECH_SYSTEMS, "optional_systems": SPEECH_SYSTEMS[1:], "tasks": BUILTIN,
                "conditions": ["clean"], "sweep_tasks": ["spoken-qa", "asr"],
                "sweep_conditions": ["white-snr10", "white-snr0"], "limit": 24,
                "about": "every built-in task × every available system, clean, plus a noise sweep on QA and ASR"},
    "full": {"systems": SPEECH_SYSTEMS + ABLATIONS, "optional_systems": SPEECH_SYSTEMS[1:] + ABLATIONS, "tasks": BUILTIN,
             "conditions": ["clean"], "sweep_tasks": ["spoken-qa", "asr", "multiturn"],
             "sweep_conditions": ["white-snr20", "white-snr10", "white-snr5", "white-snr0", "babble-snr10",
                                  "babble-snr0", "speed0.9", "speed1.1", "reverb-rt0.5", "telephone"],
             "limit": None, "about": "every item, every system, the full robustness sweep (hours on CPU)"},
    "real": {"systems": ["text", "cascade", "cascade-whisper", "audiochatllama-whisper"],
             "optional_systems": ["cascade", "audiochatllama-whisper"],
             "tasks": ["asr-fleurs-en", "asr-ljspeech", "asr-librivox", "fleurs-translate-en-fr",
                       "fleurs-translate-en-de", "fleurs-translate-en-es"], "conditions": ["clean"], "limit": None,
             "about": "real recorded speech from $AUDIOCHAT_BENCH_DATA (../shared/data), when present"},
}
