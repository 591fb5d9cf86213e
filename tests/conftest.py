import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny():
    from tests.fakes import tiny_llm

    return tiny_llm()


@pytest.fixture
def fakes_registered():
    from tests.fakes import register, register_task

    register()
    register_task()


@pytest.fixture
def shared_data():
    """The public evaluation data beside the checkout; tests that need it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (public evaluation data; only present beside a dev checkout and in CI)")
    return SHARED_DATA
