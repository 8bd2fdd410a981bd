"""Claims about NC-LQL's pieces: the noise schedule, the noise-conditioned critic, the annealed chain, the update."""
import copy
import dataclasses
import math

import pytest
import torch

import nclql_continuous_action as nclql

OBS_DIM, ACT_DIM, LEVELS = 5, 3, 10


def make_parts(seed=0, **overrides):
    torch.manual_seed(seed)
    args = nclql.Args(**overrides)
    critic = nclql.NoiseConditionedTwinCritic(OBS_DIM, ACT_DIM, args.num_levels)
    critic_target = copy.deepcopy(critic).requires_grad_(False)
    optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate)
    sigmas = nclql.sigma_schedule(args.sigma_max, args.sigma_min, args.num_levels)
    return args, critic, critic_target, optimizer, sigmas


def make_batch(batch_size=64, terminated=0.0):
    obs, next_obs = torch.randn(batch_size, OBS_DIM), torch.randn(batch_size, OBS_DIM)
    actions = torch.rand(batch_size, ACT_DIM) * 2 - 1
    rewards = torch.randn(batch_size)
    return obs, actions, rewards, next_obs, torch.full((batch_size,), terminated)


def test_sigma_schedule_is_geometric_from_sigma_max_to_sigma_min():
    sigmas = nclql.sigma_schedule(0.1, 0.001, 10)
    assert sigmas.shape == (10,)
    assert math.isclose(sigmas[0].item(), 0.1, rel_tol=1e-5) and math.isclose(sigmas[-1].item(), 0.001, rel_tol=1e-5)
    ratios = sigmas[1:] / sigmas[:-1]
    expected = 0.01 ** (1 / 9)
    assert torch.allclose(ratios, torch.full_like(ratios, expected), rtol=1e-4), f"ratios {ratios}, expected {expected}"
    # The step size alpha_l = step_lr * (sigma_l / sigma_min)^2 then runs 1.0 -> 1e-4 with the defaults.
    alphas = 1e-4 * (sigmas / sigmas[-1]) ** 2
    assert math.isclose(alphas[0].item(), 1.0, rel_tol=1e-4) and math.isclose(alphas[-1].item(), 1e-4, rel_tol=1e-4)


def test_critic_returns_both_qs_and_depends_on_the_level():
    _, critic, *_ = make_parts()
    obs, actions = torch.randn(7, OBS_DIM), torch.rand(7, ACT_DIM)
    q_level0 = critic(obs, actions, torch.zeros(7, dtype=torch.long))
    q_clean = critic(obs, actions, torch.full((7,), LEVELS - 1))
    assert q_level0.shape == (2, 7)
    assert not torch.allclose(q_level0[0], q_level0[1]), "Q1 and Q2 must be independently initialised"
    gap = (q_level0 - q_clean).abs().max().item()
    assert gap > 1e-4, f"the level input must change the output (max |Q(l=0) - Q(l=L-1)| = {gap:.2e})"
    # Mixed levels in one batch: each row sees its own level.
    mixed = torch.tensor([0, LEVELS - 1] * 3 + [0])
    q_mixed = critic(obs, actions, mixed)
    assert torch.allclose(q_mixed[:, mixed == 0], q_level0[:, mixed == 0], atol=1e-6)
    assert torch.allclose(q_mixed[:, mixed == LEVELS - 1], q_clean[:, mixed == LEVELS - 1], atol=1e-6)


def test_critic_is_the_mlp_on_the_concatenated_obs_action_and_level_embedding():
    """forward() sums fc1's three terms (W_s s + b, W_e e_l, W_a a); it must equal fc1 on concat(s, a, e_l)."""
    _, critic, *_ = make_parts()
    obs, actions, level = torch.randn(7, OBS_DIM), torch.rand(7, ACT_DIM), torch.tensor([0, 3, 9, 9, 1, 5, 0])
    embeddings = nclql.sinusoidal_encoding(torch.arange(LEVELS)).expand(2, -1, -1)
    embeddings = critic.level_embed2(torch.nn.functional.mish(critic.level_embed1(embeddings)))
    x = torch.cat([obs.expand(2, -1, -1), actions.expand(2, -1, -1), embeddings[:, level]], dim=-1)
    for layer in (critic.fc1, critic.fc2, critic.fc3):
        x = torch.nn.functional.mish(layer(x))
    assert torch.allclose(critic(obs, actions, level), critic.fc_out(x).squeeze(-1), atol=1e-6)


def concave_q(target):
    """Q(s, a, l) = -|a - a*|^2 at every level: a concave landscape with its maximiser at a*."""
    return lambda actions, level: -((actions - target) ** 2).sum(-1)


def test_chain_stays_in_the_box_even_when_the_maximiser_is_outside():
    sigmas = nclql.sigma_schedule(0.1, 0.001, LEVELS)
    actions = nclql.annealed_langevin_sample(concave_q(torch.tensor([5.0, -5.0, 0.0])), 512, ACT_DIM, sigmas, 2, 1e-4,
                                             500.0)
    assert actions.shape == (512, ACT_DIM)
    assert actions.abs().max().item() <= 1.0
    # The maximiser over the box is its corner (1, -1, 0): the chain should sit on the faces.
    assert (actions[:, 0] > 0.99).float().mean() > 0.9 and (actions[:, 1] < -0.99).float().mean() > 0.9


def test_chain_is_reproducible_under_a_seed():
    sigmas = nclql.sigma_schedule(0.1, 0.001, LEVELS)
    q_fn = concave_q(torch.tensor([0.3, -0.5, 0.1]))
    draws = []
    for _ in range(2):
        torch.manual_seed(123)
        draws.append(nclql.annealed_langevin_sample(q_fn, 64, ACT_DIM, sigmas, 2, 1e-4, 500.0))
    assert torch.equal(draws[0], draws[1])
    torch.manual_seed(124)
    other = nclql.annealed_langevin_sample(q_fn, 64, ACT_DIM, sigmas, 2, 1e-4, 500.0)
    assert not torch.equal(draws[0], other)


@pytest.mark.parametrize("grad_norm", [True, False])
def test_chain_climbs_to_the_maximiser_of_a_concave_q(grad_norm):
    """With the authors' defaults (L=10, T=2, step_lr=1e-4, w=500), 20 steps take a uniform start to a*."""
    torch.manual_seed(0)
    target = torch.tensor([0.3, -0.5, 0.1])
    sigmas = nclql.sigma_schedule(0.1, 0.001, LEVELS)
    actions = nclql.annealed_langevin_sample(concave_q(target), 2048, ACT_DIM, sigmas, 2, 1e-4, 500.0,
                                             grad_norm=grad_norm)
    bias = (actions.mean(0) - target).abs().max().item()
    distance = (actions - target).norm(dim=-1).median().item()
    # exp(w Q) = exp(-500 |a - a*|^2) has std 1/sqrt(1000) = 0.032 per coordinate, so its median distance to a*
    # is 0.049 (chi_3's median, 1.54, times 0.032); the normalised chain ends at a similar spread (the last
    # level's step moves 0.5 * 1e-4 * 500 = 0.025 along the unit gradient, plus 0.01 of noise).
    assert bias < 0.01, f"sample mean is {bias:.4f} from a* (standard error ~0.001)"
    assert distance < 0.07, f"median distance to a* {distance:.3f}; the Boltzmann law's is 0.049"


def test_sample_actions_runs_the_chain_on_the_critics_forward():
    """sample_actions computes fc1's state and level terms once per call; its chain must be the one on forward()."""
    args, critic, *_, sigmas = make_parts()
    obs = torch.randn(64, OBS_DIM)
    torch.manual_seed(7)
    actions = nclql.sample_actions(critic, obs, ACT_DIM, sigmas, args)

    def q_fn(a, level):
        return critic(obs, a, torch.full((len(a),), level)).sum(0)

    torch.manual_seed(7)
    expected = nclql.annealed_langevin_sample(q_fn, 64, ACT_DIM, sigmas, args.steps_per_level, args.step_lr, args.w)
    # Summing fc1's terms in another order changes the last float bits, which 20 steps carry to ~1e-6.
    assert (actions - expected).abs().max().item() < 1e-4


def test_best_of_n_particles_keeps_the_highest_min_q():
    args, critic, *_ , sigmas = make_parts(num_particles=8)
    obs = torch.randn(16, OBS_DIM)
    torch.manual_seed(5)
    chosen = nclql.sample_actions(critic, obs, ACT_DIM, sigmas, args)
    torch.manual_seed(5)  # the same draws: one particle for each of the 8 copies of the 16 states
    obs_n = obs.repeat(8, 1)
    candidates = nclql.sample_actions(critic, obs_n, ACT_DIM, sigmas, dataclasses.replace(args, num_particles=1))
    clean = torch.full((8 * 16,), LEVELS - 1)
    with torch.no_grad():
        q_min = critic(obs_n, candidates, clean).min(0).values.view(8, 16)
        q_chosen = critic(obs, chosen, clean[:16]).min(0).values
    assert torch.allclose(q_chosen, q_min.max(0).values, atol=1e-6)


def test_td_target_bootstraps_unless_terminated():
    """y = 0.2 r + 0.99 (1 - terminated) min_i Q_i_targ(s', a', L-1), a' from the sampler on the online critics."""
    for terminated in (1.0, 0.0):
        args, critic, critic_target, optimizer, sigmas = make_parts()
        with torch.no_grad():  # make the targets differ from the online critics, as they do during training
            for p in critic_target.parameters():
                p.add_(0.05 * torch.randn_like(p))
        obs, actions, rewards, next_obs, done = make_batch(terminated=terminated)
        clean = torch.full((len(obs),), LEVELS - 1)
        with torch.no_grad():
            q = critic(obs, actions, clean)
        torch.manual_seed(7)
        next_actions = nclql.sample_actions(critic, next_obs, ACT_DIM, sigmas, args)
        with torch.no_grad():
            bootstrap = critic_target(next_obs, next_actions, clean).min(0).values
        expected_target = 0.2 * rewards + 0.99 * (1 - terminated) * bootstrap
        torch.manual_seed(7)
        metrics = nclql.update_critic((obs, actions, rewards, next_obs, done), critic, critic_target, optimizer,
                                      sigmas, args)
        expected_loss = ((q - expected_target) ** 2).mean().item()
        assert math.isclose(metrics["td_loss"].item(), expected_loss, rel_tol=1e-5), \
            f"terminated={terminated}: td_loss {metrics['td_loss'].item():.6f}, expected {expected_loss:.6f}"


def test_smoothing_target_is_the_clean_q_from_before_the_td_step():
    """The smoothing step regresses Q_i(s, a + sigma_l z, l) onto mean(Q1, Q2)(s, a, L-1) computed BEFORE the TD
    step. Replay the update by hand with the same random draws and check which target the loss used."""
    args, critic, critic_target, optimizer, sigmas = make_parts(learning_rate=1e-2)  # a TD step that moves Q
    replay_critic, replay_target = copy.deepcopy(critic), copy.deepcopy(critic_target)  # the update moves both
    replay_optimizer = torch.optim.Adam(replay_critic.parameters(), lr=1e-2)
    obs, actions, rewards, next_obs, done = make_batch()
    clean = torch.full((len(obs),), LEVELS - 1)

    torch.manual_seed(3)
    metrics = nclql.update_critic((obs, actions, rewards, next_obs, done), critic, critic_target, optimizer,
                                  sigmas, args)

    torch.manual_seed(3)
    next_actions = nclql.sample_actions(replay_critic, next_obs, ACT_DIM, sigmas, args)
    with torch.no_grad():
        y = 0.2 * rewards + 0.99 * replay_target(next_obs, next_actions, clean).min(0).values
    q_before = replay_critic(obs, actions, clean)
    replay_optimizer.zero_grad()
    ((q_before - y) ** 2).mean(1).sum().backward()
    replay_optimizer.step()
    levels = torch.randint(0, LEVELS - 1, (len(obs),))
    noisy_actions = actions + sigmas[levels, None] * torch.randn_like(actions)
    with torch.no_grad():
        q_noisy = replay_critic(obs, noisy_actions, levels)
        q_after = replay_critic(obs, actions, clean)
    loss_pre = ((q_noisy - q_before.detach().mean(0)) ** 2).mean().item()
    loss_post = ((q_noisy - q_after.mean(0)) ** 2).mean().item()
    assert abs(loss_pre - loss_post) > 1e-3 * loss_pre, "the TD step must move Q for this test to mean anything"
    got = metrics["smoothing_loss"].item()
    assert math.isclose(got, loss_pre, rel_tol=1e-4), f"smoothing loss {got:.6f}; pre-TD target gives " \
                                                      f"{loss_pre:.6f}, post-TD target {loss_post:.6f}"
    assert levels.max().item() <= LEVELS - 2, "the smoothing step never trains the clean level"


def test_polyak_moves_targets_by_tau():
    args, critic, critic_target, optimizer, sigmas = make_parts()
    target_before = copy.deepcopy(critic_target)
    nclql.update_critic(make_batch(), critic, critic_target, optimizer, sigmas, args)
    for p, p_targ, p_old in zip(critic.parameters(), critic_target.parameters(), target_before.parameters()):
        assert torch.allclose(p_targ, 0.005 * p + 0.995 * p_old, atol=1e-6)


def test_updates_reduce_the_td_loss_on_a_fixed_batch():
    """Ten updates on one batch of terminal transitions (y = 0.2 r, no sampler noise) must fit it better."""
    args, critic, critic_target, optimizer, sigmas = make_parts(learning_rate=1e-3)
    batch = make_batch(terminated=1.0)
    losses = [nclql.update_critic(batch, critic, critic_target, optimizer, sigmas, args)["td_loss"].item()
              for _ in range(10)]
    assert losses[-1] < 0.75 * losses[0], f"td_loss {losses[0]:.4f} -> {losses[-1]:.4f}"
