"""Claims about LQL's pieces: the plain twin critic, the Langevin chain, the update (TD step and Polyak only).

The chain's law (exp(w Q) for the unnormalised chain) is tested in test_sampler_laws.py.
"""
import copy
import dataclasses
import math

import pytest
import torch

import lql_continuous_action as lql

OBS_DIM, ACT_DIM = 5, 3


def make_parts(seed=0, **overrides):
    torch.manual_seed(seed)
    args = lql.Args(**overrides)
    critic = lql.TwinCritic(OBS_DIM, ACT_DIM)
    critic_target = copy.deepcopy(critic).requires_grad_(False)
    optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate)
    return args, critic, critic_target, optimizer


def make_batch(batch_size=64, terminated=0.0):
    obs, next_obs = torch.randn(batch_size, OBS_DIM), torch.randn(batch_size, OBS_DIM)
    actions = torch.rand(batch_size, ACT_DIM) * 2 - 1
    return obs, actions, torch.randn(batch_size), next_obs, torch.full((batch_size,), terminated)


def concave_q(target):
    """Q(s, a) = -|a - a*|^2: a concave landscape with its maximiser at a*."""
    return lambda actions: -((actions - target) ** 2).sum(-1)


def test_critic_returns_both_qs():
    _, critic, *_ = make_parts()
    q = critic(torch.randn(7, OBS_DIM), torch.rand(7, ACT_DIM))
    assert q.shape == (2, 7)
    assert not torch.allclose(q[0], q[1]), "Q1 and Q2 must be independently initialised"


def test_critic_is_the_mlp_on_the_concatenated_obs_and_action():
    """forward() sums fc1's two terms (W_s s + b, W_a a); it must equal fc1 on concat(s, a)."""
    _, critic, *_ = make_parts()
    obs, actions = torch.randn(7, OBS_DIM), torch.rand(7, ACT_DIM)
    x = torch.cat([obs, actions], dim=-1).expand(2, -1, -1)
    for layer in (critic.fc1, critic.fc2, critic.fc3):
        x = torch.nn.functional.mish(layer(x))
    assert torch.allclose(critic(obs, actions), critic.fc_out(x).squeeze(-1), atol=1e-6)


def test_chain_stays_in_the_box_even_when_the_maximiser_is_outside():
    actions = lql.langevin_sample(concave_q(torch.tensor([5.0, -5.0, 0.0])), 512, ACT_DIM, 20, 1e-3, 500.0)
    assert actions.shape == (512, ACT_DIM) and actions.abs().max().item() <= 1.0
    assert (actions[:, 0] > 0.99).float().mean() > 0.9 and (actions[:, 1] < -0.99).float().mean() > 0.9


def test_chain_is_reproducible_under_a_seed():
    q_fn = concave_q(torch.tensor([0.3, -0.5, 0.1]))
    draws = []
    for seed in (123, 123, 124):
        torch.manual_seed(seed)
        draws.append(lql.langevin_sample(q_fn, 64, ACT_DIM, 20, 1e-3, 500.0))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


@pytest.mark.parametrize("grad_norm", [True, False])
def test_chain_climbs_to_the_maximiser_of_a_concave_q(grad_norm):
    """K=20 steps of 1e-3 (a step that crosses the box in 20 steps) at w=500 take a uniform start to a*."""
    torch.manual_seed(0)
    args, step_size = lql.Args(), 1e-3
    target = torch.tensor([0.3, -0.5, 0.1])
    actions = lql.langevin_sample(concave_q(target), 2048, ACT_DIM, args.langevin_steps, step_size, args.w,
                                  grad_norm=grad_norm)
    bias = (actions.mean(0) - target).abs().max().item()
    distance = (actions - target).norm(dim=-1).median().item()
    # A normalised step moves 0.5 * alpha * w along the unit gradient, so the chain rattles around a* at about
    # that distance; the unnormalised chain's law exp(-500 |a - a*|^2) has median distance 0.049.
    rattle = 0.5 * step_size * args.w
    assert bias < 0.01, f"sample mean is {bias:.4f} from a* (standard error ~0.002)"
    assert distance < max(0.07, 1.5 * rattle), f"median distance to a* {distance:.3f} (step length {rattle:.3f})"


def test_at_the_default_step_the_chain_refines_locally():
    """The default 1e-4 (chosen by the sweep in README) moves a normalised step 0.5 * 1e-4 * 500 = 0.025: its 20
    steps bring each action 0.5 closer to a*, or onto it, and no further."""
    torch.manual_seed(0)
    args, n = lql.Args(), 8192
    target = torch.tensor([0.3, -0.5, 0.1])
    travel = args.langevin_steps * 0.5 * args.langevin_step_size * args.w
    assert travel == pytest.approx(0.5)
    actions = lql.langevin_sample(concave_q(target), n, ACT_DIM, args.langevin_steps, args.langevin_step_size, args.w)
    final = (actions - target).norm(dim=-1)
    start = (torch.rand(n, ACT_DIM) * 2 - 1 - target).norm(dim=-1)  # an independent draw of the uniform start
    predicted = (start - travel).clamp(min=0)  # noise (sd 0.01 per step) and the rattle add about 0.02
    assert abs(final.mean() - predicted.mean()) < 0.04, (
        f"mean distance to a*: {final.mean():.3f} after the chain, {predicted.mean():.3f} predicted "
        f"(uniform start {start.mean():.3f}, travel {travel})")


def test_sample_actions_runs_the_chain_on_the_critics_forward():
    """sample_actions computes fc1's state term once per call; its chain must be the one on forward()."""
    args, critic, *_ = make_parts()
    obs = torch.randn(64, OBS_DIM)
    torch.manual_seed(7)
    actions = lql.sample_actions(critic, obs, ACT_DIM, args)
    torch.manual_seed(7)
    expected = lql.langevin_sample(lambda a: critic(obs, a).sum(0), 64, ACT_DIM, args.langevin_steps,
                                   args.langevin_step_size, args.w)
    # Summing fc1's terms in another order changes the last float bits, which 20 steps carry to ~1e-6.
    assert (actions - expected).abs().max().item() < 1e-4


def test_best_of_n_particles_keeps_the_highest_min_q():
    args, critic, *_ = make_parts(num_particles=8)
    obs = torch.randn(16, OBS_DIM)
    torch.manual_seed(5)
    chosen = lql.sample_actions(critic, obs, ACT_DIM, args)
    torch.manual_seed(5)  # the same draws: one particle for each of the 8 copies of the 16 states
    obs_n = obs.repeat(8, 1)
    candidates = lql.sample_actions(critic, obs_n, ACT_DIM, dataclasses.replace(args, num_particles=1))
    with torch.no_grad():
        q_min = critic(obs_n, candidates).min(0).values.view(8, 16)
        q_chosen = critic(obs, chosen).min(0).values
    assert torch.allclose(q_chosen, q_min.max(0).values, atol=1e-6)


def test_td_target_bootstraps_unless_terminated():
    """y = 0.2 r + 0.99 (1 - terminated) min_i Q_i_targ(s', a'), a' from the sampler on the online critics."""
    for terminated in (1.0, 0.0):
        args, critic, critic_target, optimizer = make_parts()
        with torch.no_grad():
            for p in critic_target.parameters():
                p.add_(0.05 * torch.randn_like(p))
        obs, actions, rewards, next_obs, done = make_batch(terminated=terminated)
        with torch.no_grad():
            q = critic(obs, actions)
        torch.manual_seed(7)
        next_actions = lql.sample_actions(critic, next_obs, ACT_DIM, args)
        with torch.no_grad():
            next_q = critic_target(next_obs, next_actions).min(0).values
            expected_target = 0.2 * rewards + 0.99 * (1 - terminated) * next_q
        torch.manual_seed(7)
        metrics = lql.update_critic((obs, actions, rewards, next_obs, done), critic, critic_target, optimizer, args)
        expected_loss = ((q - expected_target) ** 2).mean().item()
        assert math.isclose(metrics["td_loss"].item(), expected_loss, rel_tol=1e-5), \
            f"terminated={terminated}: td_loss {metrics['td_loss'].item():.6f}, expected {expected_loss:.6f}"


def test_polyak_moves_targets_by_tau():
    args, critic, critic_target, optimizer = make_parts()
    target_before = copy.deepcopy(critic_target)
    lql.update_critic(make_batch(), critic, critic_target, optimizer, args)
    for p, p_targ, p_old in zip(critic.parameters(), critic_target.parameters(), target_before.parameters()):
        assert torch.allclose(p_targ, 0.005 * p + 0.995 * p_old, atol=1e-6)


def test_updates_reduce_the_td_loss_on_a_fixed_batch():
    """Ten updates on one batch of terminal transitions (y = 0.2 r, no sampler noise) must fit it better."""
    args, critic, critic_target, optimizer = make_parts(learning_rate=1e-3)
    batch = make_batch(terminated=1.0)
    losses = [lql.update_critic(batch, critic, critic_target, optimizer, args)["td_loss"].item() for _ in range(10)]
    assert losses[-1] < 0.75 * losses[0], f"td_loss {losses[0]:.4f} -> {losses[-1]:.4f}"
