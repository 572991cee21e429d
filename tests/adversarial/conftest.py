"""Every test here is an attack or a careless use (issue: hardening); `-m adversarial` runs them."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``adversarial``."""
    for item in items:
        if "tests/adversarial/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.adversarial)
