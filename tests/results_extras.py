"""The results tools' own requirements (rliable, matplotlib, submitit), which the scripts' requirements.txt leaves out:
their tests skip without them, and say what to install."""
import pytest

INSTALL = "pip install -r tests/results/requirements.txt"


def import_or_skip(module: str):
    """The module, or a skip whose reason names the install command (pytest -rs shows it, at the test's line)."""
    __tracebackhide__ = True  # pytest reports the skip where the test called this
    return pytest.importorskip(module, reason=f"{module} is not installed: the results tools' tests need {INSTALL}")
