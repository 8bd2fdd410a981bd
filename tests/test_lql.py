"""Claims about what LQL alone has: the plain twin critic, the chain at its default step, an update without smoothing.

What it shares with NC-LQL (the chain, the policy, the TD target, Polyak) is tested once for both scripts in
test_policy_and_update.py; the chain's law (exp(w Q) for the unnormalised chain) in test_sampler_laws.py.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

import lql_continuous_action as lql

from tests.conftest import ACT_DIM, OBS_DIM, make_parts


def test_critic_is_the_mlp_on_concat_obs_action():
    """Each critic: concat(s, a) -> 3 x 256 mish -> scalar."""
    _, critic, *_ = make_parts(lql)
    obs, actions = torch.randn(7, OBS_DIM), torch.rand(7, ACT_DIM)
    x = torch.cat([obs, actions], dim=-1).expand(2, -1, -1)
    for layer in (critic.fc1, critic.fc2, critic.fc3):
        x = F.mish(layer(x))
    gap = (critic(obs, actions) - critic.fc_out(x).squeeze(-1)).abs().max().item()
    assert gap < 1e-6, f"forward() is up to {gap:.2e} from the MLP on concat(s, a) computed by hand"


def test_the_default_chain_travels_twenty_normalised_steps_toward_the_mode():
    """The default 3e-4 (the 300k sweep in tests/results/README.md) moves a normalised step 0.5 * 3e-4 * 500 = 0.075:
    its 20 steps bring each action 1.5 closer to a*, or onto it, and no further."""
    torch.manual_seed(0)
    args, n = lql.Args(), 8192
    target = torch.tensor([0.3, -0.5, 0.1])
    travel = args.langevin_steps * 0.5 * args.step_lr * args.w
    assert travel == pytest.approx(1.5), f"the default chain travels {travel}, not 1.5"
    actions = lql.langevin_sample(lambda a: -((a - target) ** 2).sum(-1), batch_size=n, act_dim=ACT_DIM,
                                  step_sizes=lql.langevin_step_sizes(args), w=args.w)
    final = (actions - target).norm(dim=-1)
    start = (torch.rand(n, ACT_DIM) * 2 - 1 - target).norm(dim=-1)  # an independent draw of the uniform start
    predicted = (start - travel).clamp(min=0)  # noise (sd 0.017 per step) and the rattle about a* add about 0.04
    step = 0.5 * args.step_lr * args.w  # a chain at a* rattles about it by up to a step
    assert abs(final.mean() - predicted.mean()) < step, (
        f"mean distance to a*: {final.mean():.3f} after the chain, {predicted.mean():.3f} predicted "
        f"(uniform start {start.mean():.3f}, travel {travel})")


def test_an_update_is_one_adam_step_on_the_td_loss_then_polyak():
    """LQL has no smoothing step: replaying the TD step and Polyak by hand, with the same draws, gives the same
    weights (NC-LQL's extra step is replayed in test_nclql.py)."""
    args, critic, critic_target, optimizer = make_parts(lql, learning_rate=1e-2)
    with torch.no_grad():  # targets off the online critic, as during training
        for p in critic_target.parameters():
            p.add_(0.05 * torch.randn_like(p))
    initial, replay_critic, replay_target = copy.deepcopy(critic), copy.deepcopy(critic), copy.deepcopy(critic_target)
    replay_optimizer = torch.optim.Adam(replay_critic.parameters(), lr=1e-2)
    obs, next_obs, actions, rewards = torch.randn(64, OBS_DIM), torch.randn(64, OBS_DIM), torch.rand(64, ACT_DIM), \
        torch.randn(64)
    batch = (obs, actions, rewards, next_obs, torch.zeros(64))

    torch.manual_seed(3)
    lql.update_critic(batch, critic, critic_target, optimizer, lql.langevin_policy, args)

    torch.manual_seed(3)
    next_actions = lql.langevin_policy(replay_critic, next_obs, args)
    with torch.no_grad():
        y = 0.2 * rewards + 0.99 * replay_target(next_obs, next_actions).min(0).values
    replay_optimizer.zero_grad()
    ((replay_critic(obs, actions) - y) ** 2).mean(1).sum().backward()
    replay_optimizer.step()
    with torch.no_grad():
        for p_targ, p in zip(replay_target.parameters(), replay_critic.parameters()):
            p_targ.mul_(0.995).add_(0.005 * p)

    moved = max((p - p0).abs().max().item() for p, p0 in zip(critic.parameters(), initial.parameters()))
    online_gap = max((p - q).abs().max().item() for p, q in zip(critic.parameters(), replay_critic.parameters()))
    target_gap = max((p - q).abs().max().item() for p, q in zip(critic_target.parameters(), replay_target.parameters()))
    assert online_gap < 1e-6 and target_gap < 1e-6, \
        f"weights after the update are up to {online_gap:.2e} (online) and {target_gap:.2e} (target) from the " \
        f"replayed TD step + Polyak (the Adam step moved them up to {moved:.2e})"


def test_annealed_step_sizes_are_nclqls_step_sizes_on_the_plain_critic(monkeypatch):
    """--annealed-step-sizes, the ablation "annealed steps without noise conditioning": LQL's 20 steps take NC-LQL's
    step sizes at NC-LQL's defaults (2 per level, alpha_l = 1e-4 (sigma_l / 0.001)^2, 1.0 down to 1e-4) and run them on
    the plain critic. Off, every step is --step-lr."""
    import nclql_continuous_action as nclql

    off, on = lql.langevin_step_sizes(lql.Args()), lql.langevin_step_sizes(lql.Args(annealed_step_sizes=True))
    assert off == [lql.Args().step_lr] * 20 and lql.Args().step_lr == 3e-4, f"without the option the steps are {off}"
    ratio = (0.001 / 0.1) ** (2 / 9)  # alpha_{l+1} / alpha_l: sigma's geometric ratio, squared
    expected = [1e-4 * ratio ** (level - 9) for level in range(10) for _ in range(2)]
    assert on == pytest.approx(expected, rel=1e-6), f"annealed step sizes {on}"

    # The same chain as NC-LQL's on a critic that ignores the level: same start, steps and noise.
    target = torch.tensor([0.3, -0.5, 0.1])

    def q_fn(a, level=None):
        return -((a - target) ** 2).sum(-1)

    defaults = nclql.Args()
    sigmas = nclql.sigma_schedule(defaults.sigma_max, defaults.sigma_min, defaults.num_levels)
    torch.manual_seed(0)
    theirs = nclql.annealed_langevin_sample(q_fn, 4096, ACT_DIM, sigmas, defaults.steps_per_level, defaults.step_lr,
                                            defaults.w)
    torch.manual_seed(0)
    ours = lql.langevin_sample(q_fn, 4096, ACT_DIM, on, w=500.0)
    gap = (ours - theirs).abs().max().item()  # float64 against float32 products of the same alpha: rounding only
    assert gap < 1e-5, f"LQL's annealed chain is up to {gap:.2e} from NC-LQL's chain on the same Q"
    torch.manual_seed(0)
    plain = lql.langevin_sample(q_fn, 4096, ACT_DIM, off, w=500.0)
    assert (plain - theirs).abs().max().item() > 0.1, "the default chain should not be NC-LQL's"

    # langevin_policy (acting, evaluation, a') runs the chain on these step sizes.
    seen = []
    real_sample = lql.langevin_sample
    monkeypatch.setattr(lql, "langevin_sample", lambda *a, **k: seen.append(a[3]) or real_sample(*a, **k))
    args, critic, *_ = make_parts(lql, annealed_step_sizes=True)
    lql.langevin_policy(critic, torch.randn(3, OBS_DIM), args)
    assert seen == [on], f"langevin_policy ran the chain with step sizes {seen}"


def test_annealed_step_sizes_need_a_multiple_of_ten_steps():
    with pytest.raises(lql.UsageError, match="multiple of 10"):
        lql.validate_args(lql.Args(annealed_step_sizes=True, langevin_steps=6))
