import contextlib
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


def _registries():
    """Every registry the plug-in packages declare (systems, trainers, data tools, tasks, ...)."""
    import systems
    import tasks
    from bench.registry import Registry

    return [v for m in (systems, tasks) for v in vars(m).values() if isinstance(v, Registry)]


@contextlib.contextmanager
def registries_kept():
    """Every plug-in registry as it was before the block, once the block is done (failed or not)."""
    states = [(reg, reg.snapshot()) for reg in _registries()]
    try:
        yield
    finally:
        for reg, state in states:
            reg.restore(state)


@pytest.fixture(autouse=True)
def registries_restored():
    """Every plug-in registry as it was before the test: what a test registers (fakes, replaced
    entries) never leaks into the next one."""
    with registries_kept():
        yield


@pytest.fixture
def fakes_registered(registries_restored):  # after the snapshot, so the fakes are undone too
    from tests.fakes import register, register_task

    register()
    register_task()


@pytest.fixture
def shared_data():
    """The public evaluation data beside the checkout; tests that need it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (public evaluation data; only present beside a dev checkout and in CI)")
    return SHARED_DATA
