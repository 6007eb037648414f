"""Shared fixtures: the example models, built once per test session and written to disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.build import build_example
from examples.zoo import MODELS


@pytest.fixture(scope="session")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("example_models")


@pytest.fixture(scope="session")
def example_path(example_dir: Path):
    """example_path(name) -> Path of the example model written to disk (built on first use)."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build_example(name, example_dir)
        return built[name]

    return get


EXAMPLES = list(MODELS)
