"""Claims about `sampler_statistics`, the sampler's health that both scripts log under sampler/ while they train:
it is right on critics whose chains are known in closed form, and watching the sampler does not change the training
run. It reads the sampler's own chain through langevin_policy's trace, which changes nothing the chain draws
(test_policy_and_update.py).
"""
import math
import os

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import ACT_DIM, OBS_DIM, lql, nclql

COUNTER = dict(env_id="tests.fake_envs:Counter-v0", num_envs=2, learning_starts=20, total_timesteps=40,
               eval_frequency=20, eval_episodes=2, batch_size=16)
FIRST_GROUP = {nclql: "level_0", lql: "block_0"}


class LinearCritic(torch.nn.Module):
    """Q1 = Q2 = c . a at every noise level, so grad_a (Q1 + Q2) = 2c everywhere (c = 0: no gradient at all)."""

    def __init__(self, c: torch.Tensor, sigmas: torch.Tensor):
        super().__init__()
        self.act_dim = len(c)
        self.register_buffer("c", c)
        self.register_buffer("sigmas", sigmas)  # NC-LQL's chain reads its sigma_l from the critic

    def forward(self, obs, actions, level=None):
        q = actions @ self.c
        return torch.stack([q, q])


def linear_critic(script, args, c):
    sigmas = nclql.sigma_schedule(args.sigma_max, args.sigma_min, args.num_levels) if script is nclql else None
    return LinearCritic(torch.as_tensor(c, dtype=torch.float32), sigmas)


def test_on_a_steep_linear_critic_every_chain_sits_on_the_corner_it_points_to(script):
    """w = 1e6: even at alpha = 1e-4 a normalised step (50 |c_j| / |c|) dwarfs the noise (0.01), so after every level
    all coordinates sit on the face sign(c_j): on_face = on_corner = 1, spread = 0, |grad| = |2c| exactly, and the
    chain's gain over uniform actions is sum |c_j| - mean(c . u)."""
    c = [0.6, -0.8, 0.3]
    args = script.Args(w=1e6, sampler_probe_states=8, sampler_probe_chains=128)
    critic = linear_critic(script, args, c)
    stats = script.sampler_statistics(critic, torch.randn(8, OBS_DIM), args)
    groups = {key.split("/")[-1] for key in stats if key.startswith("sampler/on_face/")}
    assert len(groups) == 10, f"statistics for {sorted(groups)}: one per NC-LQL level or LQL block of 2 steps"
    grad_norm = 2 * math.sqrt(sum(x * x for x in c))
    for group in groups:
        assert stats[f"sampler/on_face/{group}"] == 1.0 and stats[f"sampler/on_corner/{group}"] == 1.0, group
        assert stats[f"sampler/spread/{group}"] == 0.0, group
        assert stats[f"sampler/grad_norm/{group}"] == pytest.approx(grad_norm, rel=1e-6), group
    # uniform actions: mean c . u over 1024 draws has sd |c| / sqrt(3 * 1024) = 0.019
    assert stats["sampler/q_gain"] == pytest.approx(sum(abs(x) for x in c), abs=5 * 0.019), stats["sampler/q_gain"]


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
    by quadrature: on_face = P(|U + Z| >= 1) = 0.4245, spread = std(clip(U + Z)) = 0.7388."""
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
