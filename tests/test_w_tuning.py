"""Claims about --autotune-w (w tuned during training, as SAC tunes its temperature; README "Tuning w"):
entropy_bound is what its docstring says on laws whose entropy is known; tune_w brings the measured entropy to its
target on a critic whose chain law is known in closed form, within --w-bounds; in a run, the option off is the run
without it, bit for bit, and the tuned w is logged, saved, restored by --resume and used by --eval-checkpoint.
"""
import copy
import functools
import math
import os

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import OBS_DIM, chain_schedule, nclql

pytestmark = pytest.mark.usefixtures("one_torch_thread")
GAUSSIAN_AT_UNIT_STD = 0.5 * math.log(2 * math.pi * math.e)  # 1.4189: the entropy of N(0, 1), in nats
COUNTER = dict(env_id="tests.fake_envs:Counter-v0", num_envs=2, learning_starts=20, total_timesteps=40,
               eval_frequency=20, eval_episodes=2, batch_size=16, sampler_stats_interval=0, sampler_probe_states=4,
               sampler_probe_chains=8)


@pytest.mark.parametrize("act_dim", [3, 17])
def test_entropy_bound_on_laws_of_known_entropy(script, act_dim):
    """16 states x 4096 chains. The bound is exact for a Gaussian, 0.18 nats per dimension above the truth for the
    uniform law in the box, above it by -log det(R) / (2 d) for correlated Gaussians, finite where the truth is -inf
    (mass on a face), and the floor's value for a deterministic policy."""
    torch.manual_seed(0)
    shape = (16, 4096, act_dim)
    uniform = torch.rand(shape) * 2 - 1  # entropy log 2 per dimension; variance 1/3
    assert script.entropy_bound(uniform).item() == pytest.approx(GAUSSIAN_AT_UNIT_STD + 0.5 * math.log(1 / 3),
                                                                 abs=0.01)
    assert script.entropy_bound(uniform).item() - math.log(2) == pytest.approx(0.1765, abs=0.01)
    gaussian = 0.05 * torch.randn(shape)  # 20 stds inside the box: no clipping
    assert script.entropy_bound(gaussian).item() == pytest.approx(GAUSSIAN_AT_UNIT_STD + math.log(0.05), abs=0.01)
    # correlation rho between neighbouring dimensions' noise (an AR(1) walk across dimensions, det R = (1-rho^2)^(d-1))
    rho, z = 0.9, torch.randn(shape)
    correlated = torch.empty(shape)
    correlated[..., 0] = z[..., 0]
    for j in range(1, act_dim):
        correlated[..., j] = rho * correlated[..., j - 1] + math.sqrt(1 - rho**2) * z[..., j]
    true_entropy = GAUSSIAN_AT_UNIT_STD + math.log(0.05) + (act_dim - 1) * math.log(1 - rho**2) / (2 * act_dim)
    bound = script.entropy_bound(0.05 * correlated).item()
    assert bound == pytest.approx(GAUSSIAN_AT_UNIT_STD + math.log(0.05), abs=0.01) and bound > true_entropy + 0.5
    # half the mass on the face +1 (an atom: the true entropy is -inf), half uniform: variance 2/3 - 1/4 = 5/12
    on_face = torch.where(torch.rand(shape) < 0.5, torch.ones(shape), torch.rand(shape) * 2 - 1)
    assert script.entropy_bound(on_face).item() == pytest.approx(GAUSSIAN_AT_UNIT_STD + 0.5 * math.log(5 / 12),
                                                                 abs=0.01)
    deterministic = torch.ones(shape)  # every chain on one corner: std 0, floored at 1e-3
    assert script.entropy_bound(deterministic).item() == pytest.approx(GAUSSIAN_AT_UNIT_STD + math.log(1e-3))


def test_entropy_bound_at_the_default_probe_size_is_biased_low_by_little(script):
    """At 64 chains a state (the default probe), log of the sample std is biased low by about 1 / (2 * 63) = 0.008
    for a Gaussian: the bound over 16 states x 17 dimensions lands within 0.03 of the exact value."""
    torch.manual_seed(1)
    bound = script.entropy_bound(0.1 * torch.randn(16, 64, 17)).item()
    assert bound == pytest.approx(GAUSSIAN_AT_UNIT_STD + math.log(0.1), abs=0.03)


class BowlCritic(torch.nn.Module):
    """Q1 = Q2 = -|a|^2 / 2 at every noise level: with --no-q-grad-norm the chain is Langevin on exp(-w |a|^2),
    a ~ N(0, 1 / (2 w)) per dimension; a step of alpha, a <- (1 - alpha w) a + sqrt(alpha) z, has the stationary
    variance 1 / (w (2 - alpha w))."""

    def __init__(self, act_dim: int, sigmas: torch.Tensor | None, step_sizes: list[float] | None = None):
        super().__init__()
        self.act_dim, self.step_sizes = act_dim, step_sizes  # sigmas: NC-LQL's chain's; step sizes: LQL's
        self.register_buffer("sigmas", sigmas)

    def forward(self, obs, actions, level=None):
        q = -0.5 * (actions**2).sum(-1)
        return torch.stack([q, q])


def bowl_args(script, **overrides):
    """A long chain at one step size of 1e-3 (NC-LQL: 2 levels 10% apart in sigma, so alpha_0 = 1.21e-3), enough
    steps to forget the uniform start for w >= 10."""
    chain = (dict(num_levels=2, steps_per_level=150, sigma_max=0.0011, sigma_min=0.001) if script is nclql
             else dict(langevin_steps=300))
    options = dict(step_lr=1e-3, q_grad_norm=False, autotune_w=True, w_lr=0.5, sampler_probe_states=8,
                   sampler_probe_chains=256, **chain)
    return script.Args(**options | overrides)


def bowl_entropy(w: float, alpha: float = 1e-3) -> float:
    return GAUSSIAN_AT_UNIT_STD - 0.5 * math.log(w * (2 - alpha * w))


@pytest.mark.parametrize("start_w", [10.0, 1000.0])
def test_tune_w_brings_the_entropy_to_its_target_on_a_bowl(script, start_w):
    """Target: the entropy of the bowl's chain at w = 100. From w = 10 (too much entropy) w must rise, from 1000
    (too little) fall; after 25 steps w is within 3% of 100, and each step's logged entropy is the chain's."""
    args = bowl_args(script, w=start_w, target_entropy=bowl_entropy(100.0))
    sigmas, step_sizes = chain_schedule(script, args)
    critic, probe = BowlCritic(3, sigmas, step_sizes), torch.zeros(8, OBS_DIM)
    w = torch.tensor(start_w, dtype=torch.float64)
    policy = functools.partial(script.langevin_policy, w=w)  # as fast_path binds it
    history = [script.tune_w(w, policy, critic, probe, args) for _ in range(25)]
    first = history[0]
    assert (first["charts/w"] > start_w) == (start_w < 100), f"the first step moved w from {start_w} to {first}"
    assert first["charts/entropy_bound"] == pytest.approx(bowl_entropy(start_w), abs=0.05), first
    assert w.item() == pytest.approx(100.0, rel=0.03), [round(h["charts/w"], 1) for h in history]
    assert history[-1]["charts/w"] == w.item()


@pytest.mark.parametrize("target, bound", [(5.0, 0), (-10.0, 1)], ids=["unreachably-high", "unreachably-low"])
def test_tune_w_stays_within_its_bounds(script, target, bound):
    """A target the chain cannot reach drives w to the bound on its side, and w stays there."""
    args = bowl_args(script, w=100.0, target_entropy=target, w_bounds=(20.0, 400.0), w_lr=2.0)
    sigmas, step_sizes = chain_schedule(script, args)
    w = torch.tensor(100.0, dtype=torch.float64)
    policy, critic = functools.partial(script.langevin_policy, w=w), BowlCritic(3, sigmas, step_sizes)
    values = [script.tune_w(w, policy, critic, torch.zeros(4, OBS_DIM), args)["charts/w"]
              for _ in range(6)]
    assert all(20.0 <= v <= 400.0 for v in values), values
    assert w.item() == args.w_bounds[bound], values


def train_in(script, folder, monkeypatch, **options):
    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(folder)
    summary = script.train(script.Args(**COUNTER, **options))
    assert summary["exit_code"] == 0, summary
    return summary | {key: os.path.abspath(summary[key]) for key in ("checkpoint", "run_dir")}


def test_off_is_the_run_without_it_and_a_tuned_w_is_logged_saved_and_resumed(script, short_chain, tmp_path,
                                                                            monkeypatch):
    """The option on with w_lr = 0 (w measured, never moved) gives the critic of the run without it, bit for bit: the
    probe's chains draw from a stream of their own, and w = 500 is the float --w exactly. On with w_lr = 0.05 and wide
    bounds (so that no step is clipped and each one tells where it started): w moves, is logged as charts/w, is
    saved, and a resumed run tunes on from the saved w, not from --w."""
    every_update = dict(w_tune_start=0, w_tune_interval=1)
    plain = train_in(script, tmp_path / "off", monkeypatch, **short_chain)
    pinned = train_in(script, tmp_path / "pinned", monkeypatch, **short_chain, autotune_w=True, w_lr=0.0,
                      **every_update)
    critics = [torch.load(summary["checkpoint"], weights_only=True)["critic"] for summary in (plain, pinned)]
    differ = [name for name in critics[0] if not torch.equal(critics[0][name], critics[1][name])]
    assert not differ, f"measuring the entropy changed the critic's {differ}"
    off_tags = EventAccumulator(plain["run_dir"]).Reload().Tags()["scalars"]
    assert "charts/w" not in off_tags, "a run without --autotune-w logs no w"

    tuned = train_in(script, tmp_path / "tuned", monkeypatch, **short_chain, autotune_w=True, w_lr=0.05,
                     target_entropy=0.0, w_bounds=(1.0, 1e5), **every_update)
    run_dir, checkpoint_path = tuned["run_dir"], tuned["checkpoint"]
    logged = EventAccumulator(run_dir).Reload().Scalars("charts/w")
    assert len(logged) == tuned["num_updates"], f"{len(logged)} w values logged for {tuned['num_updates']} updates"
    assert all(1.0 < point.value < 1e5 for point in logged) and logged[-1].value != 500.0, logged
    saved = torch.load(checkpoint_path, weights_only=True)
    assert saved["w"] == pytest.approx(logged[-1].value), (saved["w"], logged[-1].value)

    # the probe is what w is tuned on: a tuned run may not change it on resume (a plain run may)
    assert script.main(["--resume", checkpoint_path, "--sampler-probe-chains", "4"]) == 2
    assert script.main(["--resume", checkpoint_path, "--total-timesteps", "50"]) == 0
    events = EventAccumulator(run_dir).Reload()
    first_w, first_entropy = (next(p.value for p in events.Scalars(tag) if p.step > saved["global_step"])
                              for tag in ("charts/w", "charts/entropy_bound"))
    step = math.exp(0.05 * (first_entropy - 0.0))
    assert first_w == pytest.approx(saved["w"] * step, rel=1e-4) and 1.0 < first_w < 1e5, \
        f"the resumed run's first step went to {first_w}, not from the saved w {saved['w']} (from --w: {500 * step})"


def test_a_tuned_checkpoint_is_evaluated_at_its_tuned_w(script, tmp_path, monkeypatch):
    """As test_resume.py's evaluation test: the one evaluation falls on the last vector step, so the final checkpoint
    holds the critic and the w it used; --eval-checkpoint repeats it exactly, and --w evaluates elsewhere."""
    monkeypatch.chdir(tmp_path)
    summary = script.train(script.Args(env_id="Hopper-v4", learning_starts=100, total_timesteps=51, eval_frequency=1000,
                                       eval_episodes=3, batch_size=64, sampler_stats_interval=0, autotune_w=True,
                                       w_tune_start=0, w_tune_interval=1, w_lr=0.5, w_bounds=(1.0, 1e5),
                                       sampler_probe_states=4, sampler_probe_chains=8))
    (_, run_return), = summary["eval_returns"]
    path = os.path.abspath(summary["checkpoint"])
    saved = torch.load(path, weights_only=True)
    assert saved["w"] != 500.0, "w did not move: the test would not tell the tuned w from --w"
    at_tuned_w = script.evaluate_checkpoint(script.Args(**saved["args"] | {"eval_checkpoint": path}))["returns"]
    assert at_tuned_w.mean() == run_return, f"run's evaluation {run_return}, the checkpoint's {at_tuned_w}"
    at_start_w = script.evaluate_checkpoint(script.Args(**saved["args"] | {"eval_checkpoint": path, "w": 499.0}))
    assert at_start_w["returns"].mean() != run_return


def test_a_compiled_chain_reads_the_tuned_w_without_compiling_again(script, short_chain):
    """The tuned w is a tensor the compiled chain takes as an input: changing it draws what eager draws at the new w,
    from the graph compiled once."""
    import torch._dynamo.utils

    args = script.Args(**short_chain, compile=True)
    sigmas, step_sizes = chain_schedule(script, args)
    critic, obs = BowlCritic(3, sigmas, step_sizes), torch.randn(8, OBS_DIM)
    w = torch.tensor(500.0, dtype=torch.float64)
    eager_critic = copy.deepcopy(critic)  # fast_path compiles the critic in place too: the reference stays eager
    compiled = script.fast_path(args, critic)[0]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    for value in (500.0, 120.0, 31.4):
        w.fill_(value)
        torch.manual_seed(0)
        drawn = compiled(critic, obs, args, w=w)
        torch.manual_seed(0)
        assert torch.allclose(drawn, script.langevin_policy(eager_critic, obs, args, w=value), atol=1e-5), value
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1, dict(torch._dynamo.utils.counters["stats"])
