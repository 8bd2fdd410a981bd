import copy
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import lql_continuous_action as lql  # noqa: E402
import nclql_continuous_action as nclql  # noqa: E402

# A Langevin chain of 6 gradient steps (the defaults run 20), in each script's own options: quick to run, and quick
# for torch.compile, which unrolls the chain into one graph.
SHORT_CHAIN = {nclql: dict(num_levels=3, steps_per_level=2), lql: dict(langevin_steps=6)}
BF16_MATMUL = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
"""bf16 matmul in hardware: without it the scripts refuse --bf16-chain (test_training_loop.py checks that)"""


def skip_without_bf16_matmul():
    if not BF16_MATMUL:
        pytest.skip("this CPU has no bf16 matmul: --bf16-chain is refused here (see test_training_loop.py)")


@pytest.fixture(params=[nclql, lql], ids=["nclql", "lql"])
def script(request):
    """Each test taking `script` runs once per algorithm: the two scripts share their shell."""
    return request.param


@pytest.fixture
def short_chain(script):
    """The options that give `script` a 6-step chain (SHORT_CHAIN), to pass on to its Args."""
    return SHORT_CHAIN[script]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module on one intra-op thread: for small tensors, and on a shared 2-core machine a second thread
    spin-waits (measured here: 50 LQL bandit updates took 16 s on 2 threads next to two training runs, 1.4-2.8 s
    on 1). Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def update_parts(script, args, obs_dim=5, act_dim=3, batch_size=64, seed=0):
    """What `script.update_critic` takes, made as train() makes it: the script's own critic (make_critic), its
    Polyak target, fused Adam at args.learning_rate; and a random batch (obs, actions, rewards, next_obs, terminated)
    on the training device. Returns (critic, critic_target, optimizer, batch)."""
    torch.manual_seed(seed)
    critic = script.make_critic(args, obs_dim, act_dim)
    critic_target = script.make_critic(args, obs_dim, act_dim)
    critic_target.load_state_dict(critic.state_dict())
    critic_target.requires_grad_(False)
    optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate, fused=True)
    device = script.training_device(args)
    batch = (torch.randn(batch_size, obs_dim, device=device), torch.rand(batch_size, act_dim, device=device) * 2 - 1,
             torch.randn(batch_size, device=device), torch.randn(batch_size, obs_dim, device=device),
             torch.zeros(batch_size, device=device))
    return critic, critic_target, optimizer, batch


def one_plain_update(script, args):
    """One update as train() makes it without the fast path (the policy's chain on the critic itself); returns its
    metrics and the number of Adam steps it took."""
    critic, critic_target, optimizer, batch = update_parts(script, args)
    policy, chain_critic = script.fast_path(args, critic, critic_target, optimizer)
    metrics = script.update_critic(batch, critic, critic_target, optimizer, policy, args, chain_critic)
    (adam_steps,) = {state["step"].item() for state in optimizer.state.values()}
    return metrics, adam_steps


def chain_schedule(script, args):
    """What a test critic carries for its script's chain, as the scripts' critics do: (sigmas, step_sizes), NC-LQL's
    sigma_l or LQL's K step sizes, the other None."""
    if script is nclql:
        return nclql.sigma_schedule(args.sigma_max, args.sigma_min, args.num_levels), None
    return None, lql.langevin_step_sizes(args)


OBS_DIM, ACT_DIM = 5, 3  # the method tests' small shapes


def make_parts(script, seed=0, **overrides):
    """Args, a critic as the script makes it, its target (a copy, as train() starts) and an Adam on the critic."""
    torch.manual_seed(seed)
    args = script.Args(cuda=False, **overrides)  # cuda=False: these tests run on CPU tensors
    critic = script.make_critic(args, OBS_DIM, ACT_DIM)
    critic_target = copy.deepcopy(critic).requires_grad_(False)
    optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate)
    return args, critic, critic_target, optimizer


def make_batch(batch_size=64, terminated=0.0):
    obs, next_obs = torch.randn(batch_size, OBS_DIM), torch.randn(batch_size, OBS_DIM)
    actions = torch.rand(batch_size, ACT_DIM) * 2 - 1
    return obs, actions, torch.randn(batch_size), next_obs, torch.full((batch_size,), terminated)
