import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import lql_continuous_action as lql  # noqa: E402
import nclql_continuous_action as nclql  # noqa: E402


@pytest.fixture(params=[nclql, lql], ids=["nclql", "lql"])
def script(request):
    """Each test taking `script` runs once per algorithm: the two scripts share their shell."""
    return request.param
