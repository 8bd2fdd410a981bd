"""Claims about what NC-LQL alone has: the noise schedule, the noise-conditioned critic, the smoothing step.

What it shares with LQL (the chain, the policy, the TD target, Polyak) is tested once for both scripts in
test_policy_and_update.py.
"""
import copy
import math

import torch
import torch.nn.functional as F

import nclql_continuous_action as nclql

from tests.conftest import ACT_DIM, OBS_DIM, make_batch, make_parts

LEVELS = 10


def all_levels(level, batch_size):
    return torch.full((batch_size,), level, dtype=torch.long)


def test_sigma_schedule_is_geometric_from_sigma_max_to_sigma_min_and_steps_run_from_1_to_1e_4():
    sigmas = nclql.sigma_schedule(sigma_max=0.1, sigma_min=0.001, num_levels=10)
    assert sigmas.shape == (10,), f"shape {tuple(sigmas.shape)}"
    ends = (sigmas[0].item(), sigmas[-1].item())
    assert math.isclose(ends[0], 0.1, rel_tol=1e-5) and math.isclose(ends[1], 0.001, rel_tol=1e-5), \
        f"sigma_0, sigma_L-1 = {ends}, expected (0.1, 0.001)"
    ratios = sigmas[1:] / sigmas[:-1]
    expected = 0.01 ** (1 / 9)
    assert torch.allclose(ratios, torch.full_like(ratios, expected), rtol=1e-4), f"ratios {ratios}, expected {expected}"
    # The chain's step size alpha_l = step_lr * (sigma_l / sigma_min)^2 then runs 1.0 -> 1e-4 with the defaults.
    alphas = 1e-4 * (sigmas / sigmas[-1]) ** 2
    assert math.isclose(alphas[0].item(), 1.0, rel_tol=1e-4) and math.isclose(alphas[-1].item(), 1e-4, rel_tol=1e-4), \
        f"alpha_0, alpha_L-1 = {alphas[0].item():.6f}, {alphas[-1].item():.3g}, expected 1.0, 1e-4"


def test_critic_carries_the_args_sigma_schedule_as_a_buffer_that_is_saved_and_not_trained():
    args, critic, *_ = make_parts(nclql)
    expected = nclql.sigma_schedule(args.sigma_max, args.sigma_min, args.num_levels)
    assert torch.equal(critic.sigmas, expected), f"critic.sigmas {critic.sigmas}, the schedule {expected}"
    assert "sigmas" in critic.state_dict(), "the schedule must travel with the critic's checkpoint"
    assert all(p is not critic.sigmas for p in critic.parameters()), "sigmas must not be a trained parameter"


def test_critic_output_depends_on_the_level_and_each_row_sees_its_own_level():
    _, critic, *_ = make_parts(nclql)
    obs, actions = torch.randn(7, OBS_DIM), torch.rand(7, ACT_DIM)
    q_level0 = critic(obs, actions, all_levels(0, 7))
    q_clean = critic(obs, actions, all_levels(LEVELS - 1, 7))
    gap = (q_level0 - q_clean).abs().max().item()
    assert gap > 1e-4, f"the level input must change the output (max |Q(l=0) - Q(l=L-1)| = {gap:.2e})"
    mixed = torch.tensor([0, LEVELS - 1] * 3 + [0])
    q_mixed = critic(obs, actions, mixed)
    gaps = [(q_mixed[:, mixed == 0] - q_level0[:, mixed == 0]).abs().max().item(),
            (q_mixed[:, mixed == LEVELS - 1] - q_clean[:, mixed == LEVELS - 1]).abs().max().item()]
    assert max(gaps) < 1e-6, f"in a batch of mixed levels, rows at levels 0 and L-1 are off by {gaps}"


def test_critic_without_a_level_is_the_clean_level_l_minus_1():
    _, critic, *_ = make_parts(nclql)
    obs, actions = torch.randn(7, OBS_DIM), torch.rand(7, ACT_DIM)
    gap = (critic(obs, actions) - critic(obs, actions, all_levels(LEVELS - 1, 7))).abs().max().item()
    assert gap < 1e-6, f"critic(obs, a) is up to {gap:.2e} from critic(obs, a, L-1)"


def test_critic_is_the_mlp_on_concat_obs_action_and_the_level_embedding():
    """Each critic: concat(s, a, e_l) -> 3 x 256 mish -> scalar; e_l = Linear(32, 16)(mish(Linear(16, 32)(sin(l)))),
    sin(l) the 16-dim sinusoidal encoding of the level."""
    _, critic, *_ = make_parts(nclql)
    obs, actions, level = torch.randn(7, OBS_DIM), torch.rand(7, ACT_DIM), torch.tensor([0, 3, 9, 9, 1, 5, 0])
    sinusoid = nclql.sinusoidal_encoding(torch.arange(LEVELS), dim=16).expand(2, -1, -1)
    embeddings = critic.level_embed2(F.mish(critic.level_embed1(sinusoid)))
    assert critic.embed_levels().shape == (2, LEVELS, 16), f"embed_levels() shape {tuple(critic.embed_levels().shape)}"
    embed_gap = (critic.embed_levels() - embeddings).abs().max().item()
    assert embed_gap < 1e-6, f"embed_levels() is up to {embed_gap:.2e} from the embedding computed by hand"
    x = torch.cat([obs.expand(2, -1, -1), actions.expand(2, -1, -1), embeddings[:, level]], dim=-1)
    for layer in (critic.fc1, critic.fc2, critic.fc3):
        x = F.mish(layer(x))
    gap = (critic(obs, actions, level) - critic.fc_out(x).squeeze(-1)).abs().max().item()
    assert gap < 1e-6, f"forward() is up to {gap:.2e} from the MLP on concat(s, a, e_l) computed by hand"


def test_smoothing_step_regresses_noisy_levels_onto_the_clean_q_from_before_the_td_step():
    """The smoothing step regresses Q_i(s, a + sigma_l z, l), l < L-1, onto mean(Q1, Q2)(s, a, L-1) computed BEFORE
    the TD step. Replay the update by hand with the same random draws and check which target the loss used."""
    args, critic, critic_target, optimizer = make_parts(nclql, learning_rate=1e-2)  # a TD step that moves Q
    replay_critic, replay_target = copy.deepcopy(critic), copy.deepcopy(critic_target)  # the update moves both
    replay_optimizer = torch.optim.Adam(replay_critic.parameters(), lr=1e-2)
    obs, actions, rewards, next_obs, done = batch = make_batch()
    sigmas = critic.sigmas

    torch.manual_seed(3)
    metrics = nclql.update_critic(batch, critic, critic_target, optimizer, nclql.langevin_policy, args)

    torch.manual_seed(3)
    next_actions = nclql.langevin_policy(replay_critic, next_obs, args)
    with torch.no_grad():
        y = 0.2 * rewards + 0.99 * replay_target(next_obs, next_actions).min(0).values
    q_before = replay_critic(obs, actions)
    replay_optimizer.zero_grad()
    ((q_before - y) ** 2).mean(1).sum().backward()
    replay_optimizer.step()
    levels = torch.randint(0, LEVELS - 1, (len(obs),))  # the draws the update made: levels 0..L-2, then the noise
    noisy_actions = actions + sigmas[levels, None] * torch.randn_like(actions)
    with torch.no_grad():
        q_noisy = replay_critic(obs, noisy_actions, levels)
        q_after = replay_critic(obs, actions)
    loss_pre = ((q_noisy - q_before.detach().mean(0)) ** 2).mean().item()
    loss_post = ((q_noisy - q_after.mean(0)) ** 2).mean().item()
    assert abs(loss_pre - loss_post) > 1e-3 * loss_pre, \
        f"the TD step must move Q for this test to mean anything: {loss_pre:.6f} vs {loss_post:.6f}"
    got = metrics["smoothing_loss"].item()
    assert math.isclose(got, loss_pre, rel_tol=1e-4), f"smoothing loss {got:.6f}; pre-TD target gives " \
                                                      f"{loss_pre:.6f}, post-TD target {loss_post:.6f}"
