"""Claim: NC-LQL here computes what the authors' JAX code computes, draw for draw.

tests/golden/nclql_authors.npz holds numbers made by the authors' own functions (tests/golden/make_nclql_golden.py
says how): their critics' parameters, a batch, every random draw their code consumed, and their outputs. These
tests load the parameters into NoiseConditionedTwinCritic, feed the same draws to the script's unchanged functions
(torch's random functions are replaced for the call) and compare.

Haiku's layout -> ours: each of their critics is a NoiseConditionedQNet whose hk.Linear layers are named in call
order; `w` is (in, out) and `b` is (out,), as ours, so Q1 and Q2 stack on a leading axis:
    linear   -> level_embed1      linear_2 -> fc1 (input rows: obs, action, level embedding, as ours)
    linear_1 -> level_embed2      linear_3, linear_4 -> fc2, fc3      linear_5 -> fc_out
"""
import os

import numpy as np
import pytest
import torch

import nclql_continuous_action as nclql

GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "golden", "nclql_authors.npz"))
OBS_DIM, ACT_DIM = GOLDEN["q.obs"].shape[1], GOLDEN["q.action"].shape[1]
HIDDEN = GOLDEN["init.q1.linear_3.w"].shape[0]
LAYERS = {"level_embed1": "linear", "level_embed2": "linear_1", "fc1": "linear_2", "fc2": "linear_3",
          "fc3": "linear_4", "fc_out": "linear_5"}
TOLERANCE = 1e-5
# --bf16-chain draws a' on a bf16 copy of the critic: its actions move by about one clean-level step's noise
# (sqrt(step_lr) = 0.01), and through a' the TD loss and Adam's steps (at most lr = 1e-4 per step) follow. Measured:
# actions 0.022 (median 0), TD loss 1.3e-4 relative, online parameters 5.2e-5, targets 1.0e-6.
BF16 = {"action": 0.05, "loss": 1e-3, "online": 2e-4, "target": 1e-5}
FP32 = {"action": TOLERANCE, "loss": TOLERANCE, "online": TOLERANCE, "target": TOLERANCE}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def authors_critic(prefix: str, pair=("q1", "q2"), **critic_kwargs) -> nclql.NoiseConditionedTwinCritic:
    """A twin critic holding the authors' parameters `{prefix}.{q1,q2}`."""
    args = nclql.Args()
    sigmas = nclql.sigma_schedule(args.sigma_max, args.sigma_min, args.num_levels)
    critic = nclql.NoiseConditionedTwinCritic(OBS_DIM, ACT_DIM, sigmas, hidden_dim=HIDDEN, **critic_kwargs)
    with torch.no_grad():
        for ours, theirs in LAYERS.items():
            layer = getattr(critic, ours)
            layer.weight.copy_(torch.stack([torch.from_numpy(GOLDEN[f"{prefix}.{m}.{theirs}.w"]) for m in pair]))
            layer.bias.copy_(torch.stack([torch.from_numpy(GOLDEN[f"{prefix}.{m}.{theirs}.b"]) for m in pair])[:, None])
    return critic


def worst_param_gap(critic, prefix: str, pair=("q1", "q2")) -> float:
    """Largest |ours - theirs| over every element of every parameter, against `{prefix}.{q1,q2}`."""
    expected = authors_critic(prefix, pair).state_dict()
    return max((critic.state_dict()[name] - value).abs().max().item() for name, value in expected.items())


class ReplayedDraws:
    """Stands in for torch.rand / torch.randn_like / torch.randint: hands out the authors' draws in order, checking
    that each call asks for the shape the next draw has."""

    def __init__(self, monkeypatch, draws):
        self.draws = [torch.as_tensor(np.asarray(d)) for d in draws]
        monkeypatch.setattr(torch, "rand", lambda *size, **kwargs: self.next_draw(size))
        monkeypatch.setattr(torch, "randn_like", lambda like, **kwargs: self.next_draw(like.shape))
        monkeypatch.setattr(torch, "randint", lambda low, high, size, **kwargs: self.next_draw(size))

    def next_draw(self, shape):
        assert self.draws, "the script drew more random numbers than the authors' code"
        draw = self.draws.pop(0)
        assert tuple(shape) == draw.shape, f"the script drew shape {tuple(shape)} where the authors drew {draw.shape}"
        return draw.clone()

    def assert_all_used(self):
        assert not self.draws, f"{len(self.draws)} of the authors' draws were never used"


def chain_draws(start, noise):
    """The authors' per-particle draws as the script asks for them: particle k of state i sits at row k * batch + i,
    so the start is one (N * batch, act_dim) draw and each of the L * T steps one more."""
    num_steps = noise.shape[1]
    return [start.reshape(-1, ACT_DIM)] + [noise[:, j].reshape(-1, ACT_DIM) for j in range(num_steps)]


def test_critic_equals_the_authors_q_at_every_level():
    critic = authors_critic("init")
    obs, actions = torch.from_numpy(GOLDEN["q.obs"]), torch.from_numpy(GOLDEN["q.action"])
    with torch.no_grad():
        for level, expected in zip(GOLDEN["q.levels"], GOLDEN["q.values"]):
            q = critic(obs, actions, torch.full((len(obs),), int(level)))
            gap = (q - torch.from_numpy(expected)).abs().max().item()
            assert gap < TOLERANCE, f"level {level}: max |Q - authors' Q| = {gap:.2e}"
        q = critic(obs, actions, torch.from_numpy(GOLDEN["q.mixed_levels"]))
        gap = (q - torch.from_numpy(GOLDEN["q.mixed_values"])).abs().max().item()
    assert gap < TOLERANCE, f"mixed levels: max |Q - authors' Q| = {gap:.2e}"


@pytest.mark.parametrize("chain", ["fp32", "bf16"])
@pytest.mark.parametrize("case, num_particles, grad_norm", [("n1", 1, True), ("n4", 4, True), ("n1_raw", 1, False)])
def test_sampler_equals_the_authors_get_action(monkeypatch, case, num_particles, grad_norm, chain):
    args = nclql.Args(num_particles=num_particles, q_grad_norm=grad_norm)
    critic = authors_critic("init") if chain == "fp32" else nclql.bf16_copy(authors_critic("init"))
    tolerance = FP32 if chain == "fp32" else BF16
    draws = ReplayedDraws(monkeypatch, chain_draws(GOLDEN[f"act.{case}.start"], GOLDEN[f"act.{case}.noise"]))
    with torch.no_grad():
        actions = nclql.langevin_policy(critic, torch.from_numpy(GOLDEN["act.obs"]), args)
    draws.assert_all_used()
    gaps = (actions - torch.from_numpy(GOLDEN[f"act.{case}.actions"])).abs()
    assert actions.dtype == torch.float32 and gaps.max() < tolerance["action"], \
        f"{case}, {chain} chain: max |action - authors' action| = {gaps.max():.2e}"
    assert gaps.median() < 1e-3, f"{case}, {chain} chain: median |action - authors' action| = {gaps.median():.2e}"


@pytest.mark.parametrize("chain", ["fp32", "bf16"])
def test_updates_equal_the_authors_update(monkeypatch, chain):
    """Several NCLQL.update calls in a row: TD step, smoothing step, Polyak, Adam state carried across the steps."""
    args = nclql.Args()
    critic, critic_target = authors_critic("init"), authors_critic("init", ("target_q1", "target_q2"))
    critic_target.requires_grad_(False)
    tolerance = FP32 if chain == "fp32" else BF16
    optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate, fused=True)  # as train() makes it
    # fast_path builds a' as train() does: on the critic, or with --bf16-chain on a bf16 copy synced after each
    # Adam step
    policy, chain_critic = nclql.fast_path(nclql.Args(bf16_chain=chain == "bf16"), critic, critic_target, optimizer)
    num_updates = sum(1 for name in GOLDEN.files if name.endswith(".td_loss"))
    for i in range(num_updates):
        u = lambda name: GOLDEN[f"update{i}.{name}"]  # noqa: E731
        batch = tuple(torch.from_numpy(u(name).astype(np.float32))
                      for name in ("obs", "action", "reward", "next_obs", "done"))
        draws = ReplayedDraws(monkeypatch, chain_draws(u("next_start"), u("next_noise"))
                              + [u("levels").astype(np.int64), u("smoothing_noise")])
        metrics = nclql.update_critic(batch, critic, critic_target, optimizer, policy, args, chain_critic)
        draws.assert_all_used()
        for loss in ("td_loss", "smoothing_loss"):  # ours is the mean of the two critics' losses
            expected = u(loss).mean()
            relative = abs(metrics[loss].item() - expected) / abs(expected)
            assert relative < tolerance["loss"], f"update {i}: {loss} {metrics[loss].item():.7g}, theirs {expected:.7g}"
        online_gap = worst_param_gap(critic, f"after{i}")
        target_gap = worst_param_gap(critic_target, f"after{i}", ("target_q1", "target_q2"))
        assert online_gap < tolerance["online"], f"update {i}: online parameters differ by {online_gap:.2e}"
        assert target_gap < tolerance["target"], f"update {i}: target parameters differ by {target_gap:.2e}"
    # The check means something only if the updates moved the parameters well past the tolerance.
    moved = worst_param_gap(authors_critic(f"after{num_updates - 1}"), "init")
    assert moved > 50 * TOLERANCE, f"the authors' updates moved the parameters by only {moved:.2e}"
