"""Dataset downloads and checks: every test here sees ample free disk (see ``ample_disk`` in tests/conftest.py)."""

import pytest


@pytest.fixture(autouse=True)
def _ample_disk(ample_disk):
    """The look-alike archives are small; the free-space check reads the real ones' sizes."""
