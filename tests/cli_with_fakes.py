"""`audiochat-bench` with the test fakes registered, for subprocess and torchrun tests."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes import register, register_task  # noqa: E402

register()
register_task()
from bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
