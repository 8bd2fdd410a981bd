import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import lql_continuous_action as lql  # noqa: E402
import nclql_continuous_action as nclql  # noqa: E402


@pytest.fixture(params=[nclql, lql], ids=["nclql", "lql"])
def script(request):
    """Each test taking `script` runs once per algorithm: the two scripts share their shell."""
    return request.param


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module on one intra-op thread: for small tensors, and on a shared 2-core machine a second thread
    spin-waits (measured here: 50 LQL bandit updates took 16 s on 2 threads next to two training runs, 1.4-2.8 s
    on 1). Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
