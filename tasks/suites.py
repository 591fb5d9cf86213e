"""Named suites: which systems, tasks and conditions a run compares, and how many items."""

SUITES: dict[str, dict] = {
    "smoke": {"systems": ["text"], "tasks": ["spoken-qa"], "conditions": ["clean"], "limit": 16,
              "about": "a minute: the topline on a few spoken-QA items"},
    "default": {"systems": ["text"], "tasks": ["spoken-qa", "asr", "translate-en-fr", "translate-en-de",
                                             "translate-en-es", "summarize", "multiturn"],
                "conditions": ["clean"], "limit": None,
                "about": "every built-in task × every system × clean (grows as systems land)"},
}
DEFAULT_SUITE = "default"
