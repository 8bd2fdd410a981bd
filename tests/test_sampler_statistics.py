"""Claims about `sampler_statistics`, the sampler's health that both scripts log under sampler/ while they train:
it is right on critics whose chains are known in closed form (each group's statistics those of the law its last step
leaves, each probe state summarised on its own chains, q_gain on min(Q1, Q2)), and watching the sampler does not
change the training run. It reads the sampler's own chain through langevin_policy's trace, which changes nothing the
chain draws (test_policy_and_update.py).
"""
import functools
import math
import os

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import ACT_DIM, OBS_DIM, chain_schedule, lql, nclql

COUNTER = dict(env_id="tests.fake_envs:Counter-v0", num_envs=2, learning_starts=20, total_timesteps=40,
               eval_frequency=20, eval_episodes=2, batch_size=16)
FIRST_GROUP = {nclql: "level_0", lql: "block_0"}


class LinearCritic(torch.nn.Module):
    """Q1 = c . a and Q2 = Q1 + b . a at every noise level, so grad_a (Q1 + Q2) = 2c + b everywhere (c = b = 0: no
    gradient at all). b = 0 by default: Q1 = Q2."""

    def __init__(self, c: torch.Tensor, sigmas: torch.Tensor, b: torch.Tensor | None = None, step_sizes=None):
        super().__init__()
        self.act_dim = len(c)
        self.register_buffer("c", c)
        self.register_buffer("b", torch.zeros_like(c) if b is None else b)
        self.register_buffer("sigmas", sigmas)  # NC-LQL's chain reads its sigma_l from the critic
        self.step_sizes = step_sizes  # LQL's, its step sizes

    def forward(self, obs, actions, level=None):
        q = actions @ self.c
        return torch.stack([q, q + actions @ self.b])


class StateLinearCritic(torch.nn.Module):
    """Q1 = Q2 = c(s) . a with c(s) the state's first act_dim coordinates: each probe state has a law of its own (a
    state of zeros: no gradient, the chain is noise alone; a steep c(s): every chain on the corner sign(c(s)))."""

    def __init__(self, act_dim: int, sigmas: torch.Tensor, step_sizes=None):
        super().__init__()
        self.act_dim, self.step_sizes = act_dim, step_sizes
        self.register_buffer("sigmas", sigmas)

    def forward(self, obs, actions, level=None):
        q = (actions * obs[:, :self.act_dim]).sum(-1)
        return torch.stack([q, q])


def linear_critic(script, args, c, b=None):
    b = None if b is None else torch.as_tensor(b, dtype=torch.float32)
    c = torch.as_tensor(c, dtype=torch.float32)
    sigmas, step_sizes = chain_schedule(script, args)
    return LinearCritic(c, sigmas, b, step_sizes)


def test_on_a_steep_linear_critic_every_chain_sits_on_its_corner_and_q_gain_takes_the_min_of_q1_and_q2(script):
    """Q1 = c . a, Q2 = Q1 + a_0 (b = (1, 0, 0)), w = 1e6: even at alpha = 1e-4 a normalised step
    (50 |2c_j + b_j| / |2c + b|) dwarfs the noise (0.01), so after every level all coordinates sit on the face
    sign(2c_j + b_j) = sign(c_j): on_face = on_corner = 1, spread = 0, |grad| = |2c + b| exactly. There min(Q1, Q2) =
    Q1 = sum |c_j| = 1.7, and at uniform actions E min(Q1, Q2) = E min(0, u_0) = -1/4: q_gain = 1.95. Q2 is not
    Q1 + a constant, which would cancel in the gain: max(Q1, Q2) would give 2.7 - 1/4 = 2.45, their mean 2.2."""
    c, b = [0.6, -0.8, 0.3], [1.0, 0.0, 0.0]
    args = script.Args(w=1e6, sampler_probe_states=8, sampler_probe_chains=512)
    critic = linear_critic(script, args, c, b)
    stats = script.sampler_statistics(critic, torch.randn(8, OBS_DIM), args)
    groups = {key.split("/")[-1] for key in stats if key.startswith("sampler/on_face/")}
    assert len(groups) == 10, f"statistics for {sorted(groups)}: one per NC-LQL level or LQL block of 2 steps"
    grad_norm = math.sqrt(sum((2 * x + y) ** 2 for x, y in zip(c, b)))
    for group in groups:
        assert stats[f"sampler/on_face/{group}"] == 1.0 and stats[f"sampler/on_corner/{group}"] == 1.0, group
        assert stats[f"sampler/spread/{group}"] == 0.0, group
        assert stats[f"sampler/grad_norm/{group}"] == pytest.approx(grad_norm, rel=1e-6), group
    # uniform actions: min(Q1, Q2) = c . u + min(0, u_0) has variance |c|^2 / 3 + 1/6 - 1/16 + 2 c_0 / 6 = 0.667, so
    # its mean over 4096 draws has sd 0.0128
    assert stats["sampler/q_gain"] == pytest.approx(1.7 + 0.25, abs=5 * 0.0128), stats["sampler/q_gain"]


def clipped_gaussian_walk(alpha: float) -> tuple[float, float]:
    """One step of a chain with no gradient from a uniform start: X = clip(U + sqrt(alpha) Z, -1, 1), U ~ U[-1, 1].
    Returns (P(|X| = 1), std(X)) by quadrature of Y = U + sqrt(alpha) Z, whose density is
    (Phi((y + 1) / s) - Phi((y - 1) / s)) / 2, s = sqrt(alpha)."""
    s = math.sqrt(alpha)
    y = torch.linspace(-1, 1, 200001, dtype=torch.float64)
    density = (torch.special.ndtr((y + 1) / s) - torch.special.ndtr((y - 1) / s)) / 2
    inside, second_moment_inside = torch.trapezoid(density, y), torch.trapezoid(y**2 * density, y)
    on_face = 1 - inside.item()
    return on_face, math.sqrt(second_moment_inside.item() + on_face)


def test_without_a_gradient_the_first_step_is_a_clipped_gaussian_walk(script):
    """On a flat critic a normalised gradient is 0 / (0 + 1e-8) = 0, and the chain is noise alone. One step of
    alpha = 1 (NC-LQL's level 0 at one step per level; LQL's first block at --step-lr 1 and 10 steps) leaves a law known
    by quadrature: on_face = P(|U + Z| >= 1) = 0.3905, spread = std(clip(U + Z)) = 0.7583."""
    one_step = dict(steps_per_level=1) if script is nclql else dict(langevin_steps=10, step_lr=1.0)
    args = script.Args(sampler_probe_states=4, sampler_probe_chains=4096, **one_step)
    stats = script.sampler_statistics(linear_critic(script, args, [0.0] * ACT_DIM), torch.randn(4, OBS_DIM), args)
    on_face, spread = clipped_gaussian_walk(alpha=1.0)
    group = FIRST_GROUP[script]
    n = 4 * 4096 * ACT_DIM  # coordinates
    assert abs(stats[f"sampler/on_face/{group}"] - on_face) < 4 * math.sqrt(on_face * (1 - on_face) / n), \
        f"on_face {stats[f'sampler/on_face/{group}']:.4f}, exact {on_face:.4f}"
    assert stats[f"sampler/spread/{group}"] == pytest.approx(spread, abs=0.01), \
        f"spread {stats[f'sampler/spread/{group}']:.4f}, exact {spread:.4f}"
    assert stats[f"sampler/grad_norm/{group}"] == 0.0 and stats["sampler/q_gain"] == 0.0


GAUSSIAN_AT_UNIT_STD = 0.5 * math.log(2 * math.pi * math.e)  # the entropy of N(0, 1), in nats
TWO_STEPS_A_GROUP = {nclql: dict(steps_per_level=2), lql: dict(langevin_steps=20, step_lr=1.0)}
"""NC-LQL's default chain (10 levels of 2 steps, alpha_l = 1 .. 1e-4); LQL's 20 steps, in blocks of 2, at alpha = 1"""


@functools.cache
def clipped_walk(alphas: tuple[float, ...], points: int = 1001) -> list[tuple[float, float, float]]:
    """A chain with no gradient from a uniform start, X <- clip(X + sqrt(alpha) Z, -1, 1) at each alpha in turn:
    after each step, (P(|X| = 1), std(X), kurtosis E X^4 / (E X^2)^2), by quadrature. X's law is a density f on
    (-1, 1) (on a grid) and an atom of mass m/2 on each face; a step maps it to the density
    (f * phi_s)(y) + m/2 (phi_s(y - 1) + phi_s(y + 1)) and the atoms' mass
    m' = integral f(x) P(|x + sZ| >= 1) dx + m (1/2 + P(Z >= 2 / s)), s = sqrt(alpha)."""
    y = torch.linspace(-1, 1, points, dtype=torch.float64)
    weights = torch.full_like(y, 2 / (points - 1))  # the trapezoid rule's
    weights[[0, -1]] /= 2
    density, atoms, laws = torch.full_like(y, 0.5), 0.0, []
    for alpha in alphas:
        s = math.sqrt(alpha)

        def phi(x):
            return torch.exp(-0.5 * (x / s) ** 2) / (s * math.sqrt(2 * math.pi))

        mass = weights * density
        to_faces = torch.special.ndtr(-(1 - y) / s) + torch.special.ndtr(-(1 + y) / s)
        density = phi(y[:, None] - y[None, :]) @ mass + atoms / 2 * (phi(y - 1) + phi(y + 1))
        atoms = (mass @ to_faces).item() + atoms * (0.5 + torch.special.ndtr(torch.tensor(-2 / s)).item())
        mass = weights * density
        second, fourth = (mass @ y**2).item() + atoms, (mass @ y**4).item() + atoms
        laws.append((atoms, math.sqrt(second), fourth / second**2))
    return laws


def group_laws(script, args) -> dict[str, tuple[float, float, float]]:
    """Each statistics group's name and, on a chain with no gradient, the law after its last step (clipped_walk):
    NC-LQL's levels (alpha_l = step_lr (sigma_l / sigma_min)^2, sigma_l geometric from sigma_max to sigma_min), LQL's
    blocks of langevin_steps / 10 steps of step_lr."""
    if script is nclql:
        ratio = args.sigma_max / args.sigma_min
        alphas = [args.step_lr * ratio ** (2 * (1 - level / (args.num_levels - 1)))
                  for level in range(args.num_levels) for _ in range(args.steps_per_level)]
        size, name = args.steps_per_level, "level"
    else:
        alphas, size, name = [args.step_lr] * args.langevin_steps, args.langevin_steps // 10, "block"
    laws = clipped_walk(tuple(alphas))
    return {f"{name}_{g}": laws[(g + 1) * size - 1] for g in range(len(alphas) // size)}


def assert_close(stats: dict, group: str, expected: dict[str, tuple[float, float]]):
    """Each statistic sampler/NAME/GROUP within 5 standard errors of its exact value (expected[NAME]: value, error)."""
    for name, (value, error) in expected.items():
        measured = stats[f"sampler/{name}/{group}"]
        assert abs(measured - value) < 5 * error, f"{name}/{group}: {measured:.4f}, exact {value:.4f} +- {error:.4f}"


def test_on_a_flat_critic_each_group_shows_the_law_its_last_step_leaves(script):
    """No gradient (Q1 = Q2 = 0): the chain is noise alone, its coordinates independent, and its law after any
    sequence of steps is known by quadrature (clipped_walk). With 2 steps a group, each group's statistics are those
    of the law after its second step (level 0: on_face 0.438, spread 0.783; after its first step 0.390, 0.758):
    on_face = P(|X| = 1); on_corner = on_face^3 (3 independent coordinates on a face; an action with any one on a
    face: 1 - (1 - on_face)^3); spread = std(X); entropy = the Gaussian's at std(X), 0.5 log(2 pi e) + log std(X).
    Tolerances: 5 standard errors of 4 states x 4096 chains (a sample std's: std sqrt((kurtosis - 1) / (4 n)))."""
    states, chains = 4, 4096
    args = script.Args(sampler_probe_states=states, sampler_probe_chains=chains, **TWO_STEPS_A_GROUP[script])
    critic = linear_critic(script, args, [0.0] * ACT_DIM)
    stats = script.sampler_statistics(critic, torch.randn(states, OBS_DIM), args)
    groups = group_laws(script, args)
    assert {key.split("/")[-1] for key in stats if key.startswith("sampler/on_face/")} == set(groups)
    for group, (on_face, std, kurtosis) in groups.items():
        on_corner = on_face**ACT_DIM
        log_std_error = math.sqrt((kurtosis - 1) / (4 * chains)) / math.sqrt(states * ACT_DIM)
        expected = {"on_face": (on_face, math.sqrt(on_face * (1 - on_face) / (states * chains * ACT_DIM))),
                    "on_corner": (on_corner, math.sqrt(on_corner * (1 - on_corner) / (states * chains))),
                    "spread": (std, std * log_std_error),
                    "entropy": (GAUSSIAN_AT_UNIT_STD + math.log(std), log_std_error)}
        assert_close(stats, group, expected)
        assert stats[f"sampler/grad_norm/{group}"] == 0.0
    assert stats["sampler/q_gain"] == 0.0


def test_entropy_bound_takes_each_probe_states_own_spread(script):
    """Three states, each its own Gaussian (means -0.5, 0 and 0.5; stds per dimension in the table), far inside the
    box: the bound is 0.5 log(2 pi e) + the mean over states and dimensions of log std. Chains pooled over states
    would see the spread between the means (std about 0.42 a dimension, a bound 1.94 nats higher); the log of the
    states' mean std instead of the mean of their logs, 0.18 nats higher."""
    torch.manual_seed(0)
    means = torch.tensor([-0.5, 0.0, 0.5])[:, None, None]
    stds = torch.tensor([[0.05, 0.02, 0.1], [0.2, 0.05, 0.05], [0.1, 0.1, 0.02]])  # state x dimension
    chains = means + stds[:, None, :] * torch.randn(3, 4096, 3)
    exact = GAUSSIAN_AT_UNIT_STD + stds.log().mean().item()
    # a Gaussian's log sample std has sd 1 / sqrt(2 n): over 9 (state, dimension) pairs, 1 / sqrt(2 * 4096 * 9)
    bound = script.entropy_bound(chains).item()
    assert bound == pytest.approx(exact, abs=5 / math.sqrt(2 * 4096 * 9)), f"bound {bound:.4f}, exact {exact:.4f}"


def test_probe_states_whose_laws_differ_are_summarised_state_by_state(script):
    """Three probe states, three laws (StateLinearCritic, w = 1e6): at the state of zeros the chain is noise alone
    (clipped_walk); at c and -c (c = (0.6, -0.8, 0.3)) every chain sits on the corner sign(+-c) after every step, as
    on the steep linear critic. Each statistic is the mean of the states' own: on_face (p + 2) / 3, on_corner
    (p^3 + 2) / 3, spread std / 3, entropy 0.5 log(2 pi e) + (log std + 2 log 1e-3) / 3 (the floor of a state whose
    chains agree), grad_norm 2 |2c| / 3, q_gain 2 * 1.7 / 3. Chains pooled over states would see the two corners'
    spread (std about 0.8 a dimension, and an entropy near the noise's)."""
    c, chains = torch.tensor([0.6, -0.8, 0.3]), 4096
    probe = torch.zeros(3, OBS_DIM)
    probe[1, :ACT_DIM], probe[2, :ACT_DIM] = c, -c
    args = script.Args(w=1e6, sampler_probe_states=3, sampler_probe_chains=chains, **TWO_STEPS_A_GROUP[script])
    critic = StateLinearCritic(ACT_DIM, *chain_schedule(script, args))
    stats = script.sampler_statistics(critic, probe, args)
    for group, (on_face, std, kurtosis) in group_laws(script, args).items():
        log_std_error = math.sqrt((kurtosis - 1) / (4 * chains)) / math.sqrt(ACT_DIM)  # the noisy state's alone
        expected = {"on_face": ((on_face + 2) / 3, math.sqrt(on_face * (1 - on_face) / (chains * ACT_DIM)) / 3),
                    "on_corner": ((on_face**ACT_DIM + 2) / 3,
                                  math.sqrt(on_face**ACT_DIM * (1 - on_face**ACT_DIM) / chains) / 3),
                    "spread": (std / 3, std * log_std_error / 3),
                    "entropy": (GAUSSIAN_AT_UNIT_STD + (math.log(std) + 2 * math.log(1e-3)) / 3, log_std_error / 3)}
        assert_close(stats, group, expected)
        assert stats[f"sampler/grad_norm/{group}"] == pytest.approx(2 * 2 * c.norm().item() / 3, rel=1e-6), group
    # the uniform actions' mean c . u at each steep state has sd |c| / sqrt(3 * 4096) = 0.0094
    assert stats["sampler/q_gain"] == pytest.approx(2 * 1.7 / 3, abs=5 * 0.0094 * math.sqrt(2) / 3)


def test_watching_the_sampler_does_not_change_the_run_and_the_probe_is_kept(script, short_chain, tmp_path,
                                                                            monkeypatch):
    """Statistics after every update against none: the same weights bit for bit; the probe of states is saved in
    the checkpoint and a resumed run watches the same states."""
    runs = {}
    for interval in (1, 0):
        (tmp_path / str(interval)).mkdir()
        monkeypatch.chdir(tmp_path / str(interval))
        summary = script.train(script.Args(**COUNTER, **short_chain, sampler_stats_interval=interval))
        assert summary["exit_code"] == 0, summary
        runs[interval] = {key: os.path.abspath(summary[key]) for key in ("checkpoint", "run_dir")}
    watched, unwatched = (torch.load(runs[i]["checkpoint"], weights_only=True) for i in (1, 0))
    differ = [name for name in watched["critic"] if not torch.equal(watched["critic"][name], unwatched["critic"][name])]
    assert not differ, f"watching the sampler changed the critic's {differ}"
    tags = EventAccumulator(runs[1]["run_dir"]).Reload().Tags()["scalars"]
    logged = [tag for tag in tags if tag.startswith("sampler/")]
    groups = short_chain.get("num_levels") or short_chain["langevin_steps"]  # 3 levels; 6 steps: blocks of one
    assert "sampler/q_gain" in logged and len(logged) == 1 + 5 * groups, logged
    unwatched_tags = EventAccumulator(runs[0]["run_dir"]).Reload().Tags()["scalars"]
    assert not any(tag.startswith("sampler/") for tag in unwatched_tags), unwatched_tags

    probe = watched["sampler_probe"]
    assert probe.shape == (16, 2), f"probe of shape {tuple(probe.shape)}: --sampler-probe-states states of the env"
    monkeypatch.chdir(tmp_path / "1")
    assert script.main(["--resume", runs[1]["checkpoint"], "--total-timesteps", "60"]) == 0
    resumed = torch.load(runs[1]["checkpoint"], weights_only=True)
    assert resumed["learning_step"] > 40 and torch.equal(resumed["sampler_probe"], probe), "the probe changed"


def test_the_statistics_run_once_at_an_evaluation_that_falls_on_their_interval(script, short_chain, tmp_path,
                                                                                monkeypatch):
    """Every --sampler-stats-interval updates and at each evaluation, once where both fall on the same update: 17
    updates with evaluations at updates 8 and 16 and the interval 8 watch the sampler twice, not again an update on."""
    monkeypatch.chdir(tmp_path)
    calls, real_statistics = [], script.sampler_statistics

    def spy_statistics(critic, probe_obs, args, w=None):
        calls.append(critic.fc_out.weight.detach().clone())
        return real_statistics(critic, probe_obs, args, w)

    monkeypatch.setattr(script, "sampler_statistics", spy_statistics)
    options = {**COUNTER, "total_timesteps": 32, "eval_frequency": 16, "sampler_stats_interval": 8, "save_model": False}
    summary = script.train(script.Args(**options, **short_chain))
    assert summary["num_updates"] == 17 and len(summary["eval_returns"]) == 2, summary
    assert len(calls) == 2, f"the statistics ran {len(calls)} times in 17 updates (at updates 8 and 16 expected)"
