"""Claims that hold for both methods, each run once per script (the `script` fixture): the twin critic, the Langevin
chain, the policy built on it (best-of-N included) and the critic update (TD target, Polyak).

What only one method does is in test_nclql.py (noise levels, the smoothing step) and test_lql.py; the laws the
chains sample are in test_sampler_laws.py.
"""
import copy
import dataclasses
import math

import pytest
import torch

import lql_continuous_action as lql
import nclql_continuous_action as nclql

from tests.conftest import ACT_DIM, OBS_DIM, make_batch, make_parts


def nudge(critic_target):
    """Move the target's weights off the online critic's, as Polyak averaging leaves them during training."""
    with torch.no_grad():
        for p in critic_target.parameters():
            p.add_(0.05 * torch.randn_like(p))


# EACH SCRIPT'S CHAIN, CALLED AS ITS POLICY CALLS IT
def nclql_chain(q_fn, batch_size, args):
    """NC-LQL's annealed chain at `args`' settings on q_fn(actions, level)."""
    return nclql.annealed_langevin_sample(
        q_fn, batch_size=batch_size, act_dim=ACT_DIM,
        sigmas=nclql.sigma_schedule(args.sigma_max, args.sigma_min, args.num_levels),
        steps_per_level=args.steps_per_level, step_lr=args.step_lr, w=args.w, grad_norm=args.q_grad_norm)


def lql_chain(q_fn, batch_size, args):
    """LQL's plain chain at `args`' settings on q_fn(actions) (no levels)."""
    return lql.langevin_sample(q_fn, batch_size=batch_size, act_dim=ACT_DIM, step_sizes=lql.langevin_step_sizes(args),
                               w=args.w, grad_norm=args.q_grad_norm)


CHAIN = {nclql.__name__: nclql_chain, lql.__name__: lql_chain}

CROSSING_ARGS = {nclql.__name__: nclql.Args(), lql.__name__: lql.Args(step_lr=1e-3)}
"""Settings at which each chain travels across the box in its 20 steps: NC-LQL's defaults (steps 1.0 down to 1e-4);
LQL at step 1e-3 (a normalised step moves 0.5 * 1e-3 * 500 = 0.25), since its default 3e-4 moves 0.075 a step,
1.5 in all, and refines locally (test_lql.py)."""


def q1_plus_q2(critic, obs):
    """Q1 + Q2 at the states `obs`, as the chain's q_fn(actions[, level]); no level: the clean critic (LQL's only)."""
    def q_fn(actions, level=None):
        if level is None:
            return critic(obs, actions).sum(0)
        return critic(obs, actions, torch.full((len(obs),), level)).sum(0)

    return q_fn


def concave_q(target):
    """Q(a) = -|a - a*|^2 at every level: a concave landscape with its maximiser at a*."""
    return lambda actions, level=None: -((actions - target) ** 2).sum(-1)


# CRITIC
def test_critic_returns_q1_and_q2_initialised_independently(script):
    _, critic, *_ = make_parts(script)
    q = critic(torch.randn(7, OBS_DIM), torch.rand(7, ACT_DIM))
    assert q.shape == (2, 7), f"critic output shape {tuple(q.shape)}, expected (2, 7): Q1 and Q2"
    gap = (q[0] - q[1]).abs().max().item()
    assert gap > 1e-4, f"max |Q1 - Q2| = {gap:.2e}: Q1 and Q2 must be initialised independently"


# CHAIN
def test_chain_stays_in_the_box_and_goes_to_its_faces_when_the_maximiser_is_outside(script):
    args = CROSSING_ARGS[script.__name__]
    torch.manual_seed(0)
    actions = CHAIN[script.__name__](concave_q(torch.tensor([5.0, -5.0, 0.0])), batch_size=512, args=args)
    largest = actions.abs().max().item()
    assert actions.shape == (512, ACT_DIM) and largest <= 1.0, f"shape {tuple(actions.shape)}, max |a| {largest}"
    # The maximiser over the box is its corner (1, -1, 0): the chain should sit on the faces a1 = 1 and a2 = -1.
    on_faces = [(actions[:, 0] > 0.99).float().mean().item(), (actions[:, 1] < -0.99).float().mean().item()]
    assert min(on_faces) > 0.9, f"share of samples on the faces a1 = 1, a2 = -1: {on_faces} (expected > 0.9)"


def test_chain_is_reproducible_under_a_seed(script):
    args, q_fn = CROSSING_ARGS[script.__name__], concave_q(torch.tensor([0.3, -0.5, 0.1]))
    draws = []
    for seed in (123, 123, 124):
        torch.manual_seed(seed)
        draws.append(CHAIN[script.__name__](q_fn, batch_size=64, args=args))
    gap = (draws[0] - draws[1]).abs().max().item()
    assert torch.equal(draws[0], draws[1]), f"same seed, actions differ by up to {gap:.2e}"
    assert not torch.equal(draws[0], draws[2]), "seeds 123 and 124 drew the same actions"


@pytest.mark.parametrize("grad_norm", [True, False], ids=["grad-norm", "no-grad-norm"])
def test_chain_climbs_to_the_maximiser_of_a_concave_q(script, grad_norm):
    """20 gradient steps at CROSSING_ARGS (w = 500) take a uniform start to a*, whichever the gradient's norm."""
    args = dataclasses.replace(CROSSING_ARGS[script.__name__], q_grad_norm=grad_norm)
    target = torch.tensor([0.3, -0.5, 0.1])
    torch.manual_seed(0)
    actions = CHAIN[script.__name__](concave_q(target), batch_size=2048, args=args)
    bias = (actions.mean(0) - target).abs().max().item()
    standard_error = (actions.std(0) / math.sqrt(len(actions))).max().item()
    distance = (actions - target).norm(dim=-1).median().item()
    # exp(w Q) = exp(-500 |a - a*|^2) has std 1/sqrt(1000) = 0.032 per coordinate, so its median distance to a* is
    # 0.049 (chi_3's median, 1.54, times 0.032). A normalised last step moves 0.5 * step * w along the unit gradient,
    # so that chain rattles around a* at about that distance: 0.025 for NC-LQL (last step 1e-4), 0.25 for LQL (1e-3).
    rattle = 0.5 * args.step_lr * args.w
    assert bias < 0.01, f"sample mean is {bias:.4f} from a* (standard error {standard_error:.4f})"
    assert distance < max(0.07, 1.5 * rattle), \
        f"median distance to a* {distance:.3f}; exp(wQ)'s is 0.049, the last step's length {rattle:.3f}"


# POLICY
def test_policy_is_the_chain_on_q1_plus_q2_at_the_args_settings(script):
    args, critic, *_ = make_parts(script)
    obs = torch.randn(64, OBS_DIM)
    torch.manual_seed(7)
    actions = script.langevin_policy(critic, obs, args)
    torch.manual_seed(7)
    expected = CHAIN[script.__name__](q1_plus_q2(critic, obs), batch_size=64, args=args)
    assert actions.shape == (64, ACT_DIM) and actions.dtype == torch.float32, f"{tuple(actions.shape)} {actions.dtype}"
    gap = (actions - expected).abs().max().item()
    assert gap < 1e-6, f"policy's actions differ from the chain on Q1 + Q2 by up to {gap:.2e}"
    # Watching the chain (sampler_statistics' trace: each step's raw |grad| and actions) changes nothing it draws.
    torch.manual_seed(7)
    trace = []
    traced = script.langevin_policy(critic, obs, args, trace)
    assert torch.equal(actions, traced), "recording the chain changed what it draws"
    assert len(trace) == 20 and torch.equal(trace[-1][1], traced), f"{len(trace)} steps recorded; 20 expected"


def test_best_of_n_particles_keeps_the_one_with_the_highest_min_q1_q2(script):
    n, batch_size = 8, 16
    args, critic, *_ = make_parts(script, num_particles=n)
    obs = torch.randn(batch_size, OBS_DIM)
    torch.manual_seed(5)
    chosen = script.langevin_policy(critic, obs, args)
    torch.manual_seed(5)  # the same draws: one particle for each of the n copies of the states
    obs_n = obs.repeat(n, 1)
    candidates = script.langevin_policy(critic, obs_n, dataclasses.replace(args, num_particles=1))
    with torch.no_grad():
        q_min = critic(obs_n, candidates).min(0).values.view(n, batch_size)
        q_chosen = critic(obs, chosen).min(0).values
    gap = (q_chosen - q_min.max(0).values).abs().max().item()
    spread = (q_min.max(0).values - q_min.min(0).values).mean().item()
    assert chosen.shape == (batch_size, ACT_DIM), f"best-of-{n} returned shape {tuple(chosen.shape)}"
    assert gap < 1e-6, f"min(Q1, Q2) of the kept particle is up to {gap:.2e} below the best of {n} " \
                       f"(mean best - worst among the particles: {spread:.2e})"


# UPDATE
class SpyPolicy:
    """The script's policy, recording each call's critic, states and actions."""

    def __init__(self, script):
        self.policy, self.calls = script.langevin_policy, []

    def __call__(self, critic, obs, args):
        actions = self.policy(critic, obs, args)
        self.calls.append((critic, obs, actions))
        return actions


def update(script, batch, critic, critic_target, optimizer, args):
    """One update_critic as train() makes it on the float32 path (fast_path's policy; a test that spies on the policy
    patches script.langevin_policy first)."""
    policy, chain_critic = script.fast_path(args, critic, critic_target, optimizer)
    return script.update_critic(batch, critic, critic_target, optimizer, policy, args, chain_critic)


@pytest.mark.parametrize("terminated", [0.0, 1.0], ids=["bootstraps", "terminated"])
def test_td_target_is_the_scaled_reward_plus_discounted_min_target_q_unless_terminated(script, terminated,
                                                                                        monkeypatch):
    """y = 0.2 r + 0.99 (1 - terminated) min_i Q_i_targ(s', a'); the TD loss is the critics' mean (Q_i(s, a) - y)^2."""
    args, critic, critic_target, optimizer = make_parts(script)
    nudge(critic_target)
    obs, actions, rewards, next_obs, done = batch = make_batch(terminated=terminated)
    target_before = copy.deepcopy(critic_target)  # the update ends with Polyak, which moves the target
    with torch.no_grad():
        q = critic(obs, actions)
    spy = SpyPolicy(script)
    monkeypatch.setattr(script, "langevin_policy", spy)
    metrics = update(script, batch, critic, critic_target, optimizer, args)
    (_, _, next_actions), = spy.calls
    with torch.no_grad():
        next_q = target_before(next_obs, next_actions).min(0).values
    expected = ((q - (0.2 * rewards + 0.99 * (1 - terminated) * next_q)) ** 2).mean().item()
    other = ((q - (0.2 * rewards + 0.99 * terminated * next_q)) ** 2).mean().item()  # the other case's loss
    got = metrics["td_loss"].item()
    assert math.isclose(got, expected, rel_tol=1e-5), \
        f"td_loss {got:.6f}, expected {expected:.6f} (with the bootstrap term {'on' if terminated else 'off'}: " \
        f"{other:.6f})"


def test_td_targets_next_action_is_drawn_on_the_online_critic_and_valued_by_the_target_critic(script, monkeypatch):
    args, critic, critic_target, optimizer = make_parts(script)
    nudge(critic_target)
    obs, actions, rewards, next_obs, done = batch = make_batch()
    online_before, target_before = copy.deepcopy(critic), copy.deepcopy(critic_target)
    with torch.no_grad():
        q = critic(obs, actions)
    spy = SpyPolicy(script)
    monkeypatch.setattr(script, "langevin_policy", spy)
    torch.manual_seed(7)
    metrics = update(script, batch, critic, critic_target, optimizer, args)
    assert len(spy.calls) == 1, f"the update called the policy {len(spy.calls)} times, expected once (for a')"
    chain_critic, states, _ = spy.calls[0]
    assert chain_critic is critic and torch.equal(states, next_obs), "a' must be drawn on the online critic at s'"

    def td_loss(draw_on, value_with):  # replay the target with the same draws, a' from `draw_on`
        torch.manual_seed(7)
        next_actions = script.langevin_policy(draw_on, next_obs, args)
        with torch.no_grad():
            y = 0.2 * rewards + 0.99 * value_with(next_obs, next_actions).min(0).values
        return ((q - y) ** 2).mean().item()

    got = metrics["td_loss"].item()
    expected = td_loss(online_before, target_before)
    wrong = {"a' on the target": td_loss(target_before, target_before),
             "valued by the online critic": td_loss(online_before, online_before)}
    figures = f"td_loss {got:.6f}; a' on the online critic valued by the target: {expected:.6f}; " + \
        "; ".join(f"{name}: {loss:.6f}" for name, loss in wrong.items())
    assert all(abs(loss - expected) > 1e-3 * expected for loss in wrong.values()), f"no power to tell: {figures}"
    assert math.isclose(got, expected, rel_tol=1e-5), figures


def test_update_returns_the_td_loss_and_the_mean_q_as_detached_scalars(script):
    args, critic, critic_target, optimizer = make_parts(script)
    obs, actions, *_ = batch = make_batch()
    with torch.no_grad():
        q_before = critic(obs, actions).mean().item()
    metrics = update(script, batch, critic, critic_target, optimizer, args)
    assert {"td_loss", "q"} <= set(metrics), f"metrics {sorted(metrics)} lack td_loss or q"
    for name, value in metrics.items():
        assert value.shape == () and not value.requires_grad and math.isfinite(value.item()), \
            f"{name}: shape {tuple(value.shape)}, requires_grad {value.requires_grad}, value {value.item()}"
    assert math.isclose(metrics["q"].item(), q_before, rel_tol=1e-6), \
        f"q {metrics['q'].item():.6f}, mean(Q1, Q2)(s, a) before the update {q_before:.6f}"


def test_polyak_moves_each_target_weight_tau_of_the_way_to_the_online_weight(script):
    args, critic, critic_target, optimizer = make_parts(script)
    nudge(critic_target)
    target_before = copy.deepcopy(critic_target)
    update(script, make_batch(), critic, critic_target, optimizer, args)
    gap = max((p_targ - (0.005 * p + 0.995 * p_old)).abs().max().item()
              for p, p_targ, p_old in zip(critic.parameters(), critic_target.parameters(), target_before.parameters()))
    assert gap < 1e-6, f"target weights are up to {gap:.2e} from 0.005 online + 0.995 previous target"


def test_updates_lower_the_td_loss_on_a_fixed_batch(script):
    """Ten updates on one batch of terminal transitions (y = 0.2 r, no sampler noise) must fit it better."""
    args, critic, critic_target, optimizer = make_parts(script, learning_rate=1e-3)
    batch = make_batch(terminated=1.0)
    losses = [update(script, batch, critic, critic_target, optimizer, args)["td_loss"].item() for _ in range(10)]
    assert losses[-1] < 0.75 * losses[0], f"td_loss {losses[0]:.4f} -> {losses[-1]:.4f} over 10 updates"
