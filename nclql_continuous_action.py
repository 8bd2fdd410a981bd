# Noise-Conditioned Langevin Q-Learning (NC-LQL), from "Direct Soft-Policy Sampling via Langevin Dynamics" (arXiv
# 2602.07873). No actor: the soft policy pi(a|s) ~ exp(w Q(s,a)) is sampled by annealed Langevin dynamics on a twin
# critic conditioned on a noise level (with the default normalised gradient, w scales the step and the chain does not
# sample exp(w Q) exactly). Defaults follow the authors' JAX code (ku-dmlab/NCLQL). README: the method.
import copy
import dataclasses
import functools
import importlib.util
import math
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro


@dataclass
class Args:
    # The method: Langevin sampler
    num_levels: int = 10  # L: noise levels; level L-1 is the clean critic
    steps_per_level: int = 2  # T: Langevin steps per level (L * T gradient steps per action)
    sigma_max: float = 0.1  # smoothing width of level 0, the smoothest
    sigma_min: float = 0.001  # sigma_{L-1}: the clean level is never smoothed; sigma_min only sets the step sizes
    step_lr: float = 1e-4  # base step size: level l uses alpha_l = step_lr * (sigma_l / sigma_min)^2
    w: float = 500.0  # inverse temperature of pi(a|s) ~ exp(w Q(s,a)), Q = Q1 + Q2
    q_grad_norm: bool = True  # step along grad_a Q's direction only (authors); off: Langevin on exp(w (Q1 + Q2))
    num_particles: int = 1  # N chains per state; the action with the highest min(Q1, Q2) is kept
    # The method: critic learning
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critics
    learning_rate: float = 1e-4  # Adam's learning rate (both critics, both losses)
    reward_scale: float = 0.2  # rewards are multiplied by this in the TD target

    # Environment and protocol (the authors')
    env_id: str = "Hopper-v4"  # a Gymnasium id with bounded continuous actions (the authors ran MuJoCo v4)
    total_timesteps: int = 5_000_000  # env steps after the warm-up, as the authors count
    num_envs: int = 5  # parallel environments; one update per vector step
    buffer_size: int = 1_000_000
    batch_size: int = 256
    learning_starts: int = 30_000  # env steps of uniform-random actions before learning starts
    eval_frequency: int = 125_000  # evaluate every this many env steps after the warm-up, and at --total-timesteps
    eval_episodes: int = 20  # episodes per evaluation, one env each
    eval_seed: int = 0  # evaluation env i is seeded eval_seed + i at every evaluation

    # Run, logging and checkpoints
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # names the run folder runs/{env_id}__{exp_name}__...
    seed: int = 1
    cuda: bool = True
    log_interval_s: float = 10.0
    track: bool = False  # track the run with Weights and Biases (`pip install wandb`)
    wandb_project_name: str = "nclql"
    wandb_entity: str | None = None
    capture_video: bool = False  # record the first evaluation env's episodes to videos/ (`pip install moviepy`)
    save_model: bool = True  # save a checkpoint at each evaluation, at the end and when stopped (Ctrl-C, kill)
    save_buffer: bool = False  # also save the replay buffer, so that --resume goes on exactly (Hopper-v4: 108 MB)
    resume: str | None = None  # continue this checkpoint's run; options not given are the checkpoint's
    eval_checkpoint: str | None = None  # evaluate this checkpoint for --eval-episodes episodes and exit

    # Watching the sampler: sampler/ in TensorBoard
    sampler_stats_interval: int = 1000  # updates between the sampler statistics (and at each evaluation); 0: none
    sampler_probe_states: int = 16  # M: states watched, drawn from the buffer when learning starts
    sampler_probe_chains: int = 64  # C: chains per probe state

    # Tuning w as SAC tunes its temperature (beyond the paper; tests/results/README.md: Tuning w)
    autotune_w: bool = False  # move log w toward --target-entropy (off: w stays --w, as the authors have it)
    target_entropy: float = -1.0  # nats per action dimension (entropy_bound: -5.49 to 1.42)
    w_lr: float = 0.2  # each tuning step moves log w by w_lr * (measured entropy - target)
    w_tune_interval: int = 250
    w_tune_start: int = 1000  # no tuning step before this update (the first critics are random)
    w_bounds: tuple[float, float] = (1.0, 1000.0)

    # Speed (README: Speed)
    compile: bool = False  # torch.compile the chain and the critics (~1 min per batch shape on 2 cores)
    bf16_chain: bool = False  # draw the TD target's a' on a bfloat16 copy of the critic (needs bf16 hardware)


# ENVIRONMENT
def make_env(env_id: str, seed: int, idx: int, capture_video: bool, run_name: str):
    def thunk():
        if capture_video and idx == 0:
            env = gym.make(env_id, render_mode="rgb_array")
            env = gym.wrappers.RecordVideo(env, f"videos/{run_name}", episode_trigger=lambda episode: True)
        else:
            env = gym.make(env_id)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        unit = np.ones(env.action_space.shape, dtype=np.float32)  # the sampler lives in [-1, 1]^act_dim
        env = gym.wrappers.RescaleAction(env, min_action=-unit, max_action=unit)
        env.action_space.seed(seed)
        return env

    return thunk


def make_vector_env(env_id: str, num_envs: int, seed: int, capture_video: bool, run_name: str) -> gym.vector.VectorEnv:
    # The default NEXT_STEP autoreset would hand back, on the step after a done, the reset obs as a transition;
    # SAME_STEP resets at once and keeps the true last obs in infos["final_obs"]
    return gym.vector.SyncVectorEnv([make_env(env_id, seed + i, i, capture_video, run_name) for i in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def real_next_obs(next_obs: np.ndarray, infos: dict) -> np.ndarray:
    """The observation each transition really ended in: the final one for envs that just finished."""
    real = next_obs.copy()
    if "final_obs" in infos:
        for i in np.flatnonzero(infos["_final_obs"]):
            real[i] = infos["final_obs"][i]
    return real


# REPLAY BUFFER
class ReplayBuffer:
    """Transitions on the training device; a time-limit truncation keeps its real final obs and bootstraps."""

    FIELDS = ("obs", "next_obs", "actions", "rewards", "terminated")

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device):
        self.capacity, self.device, self.pos, self.size = capacity, device, 0, 0
        self.obs = torch.zeros(capacity, obs_dim, device=device)
        self.next_obs = torch.zeros(capacity, obs_dim, device=device)
        self.actions = torch.zeros(capacity, act_dim, device=device)
        self.rewards = torch.zeros(capacity, device=device)
        self.terminated = torch.zeros(capacity, device=device)

    def add(self, obs, next_obs, actions, rewards, terminated) -> None:
        idx = torch.arange(self.pos, self.pos + len(obs)) % self.capacity
        for name, value in zip(self.FIELDS, (obs, next_obs, actions, rewards, terminated)):
            getattr(self, name)[idx] = torch.as_tensor(np.asarray(value, dtype=np.float32), device=self.device)
        self.pos = (self.pos + len(obs)) % self.capacity
        self.size = min(self.size + len(obs), self.capacity)

    def sample(self, batch_size: int):
        idx = torch.randint(0, self.size, (batch_size,), device=self.device)
        return self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx], self.terminated[idx]


# CRITIC
class EnsembleLinear(nn.Module):
    """`num_members` independent linear layers run as one batched matmul: Q1 and Q2 in a single call."""

    def __init__(self, num_members: int, in_features: int, out_features: int):
        super().__init__()
        std = 1.0 / math.sqrt(in_features)  # Haiku's default init, as the authors': truncated normal, zero bias
        self.weight = nn.Parameter(nn.init.trunc_normal_(torch.empty(num_members, in_features, out_features),
                                                         std=std, a=-2 * std, b=2 * std))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def sinusoidal_encoding(levels: torch.Tensor, dim: int = 16) -> torch.Tensor:
    """Transformer-style encoding of integer noise levels, scaled by 1/sqrt(dim) as in the authors' code."""
    half = dim // 2
    inv_freq = 10000.0 ** (-torch.arange(half, device=levels.device) / half)
    angles = levels.float()[:, None] * inv_freq
    return torch.cat([angles.sin(), angles.cos()], dim=-1) / math.sqrt(dim)


def sigma_schedule(sigma_max: float, sigma_min: float, num_levels: int) -> torch.Tensor:
    """sigma_l, l = 0..L-1: geometric from sigma_max (smoothest, l=0) to sigma_min (clean, l=L-1)."""
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), num_levels))


class NoiseConditionedTwinCritic(nn.Module):
    """Q1(s, a, l) and Q2(s, a, l), each concat(obs, action, e_l) -> 3 x 256 mish -> scalar, e_l the level's embedding.
    Level L-1 is the clean Q(s, a); level l < L-1 is Q smoothed by action noise of width sigma_l (buffer `sigmas`)."""

    def __init__(self, obs_dim: int, act_dim: int, sigmas: torch.Tensor, hidden_dim: int = 256, level_dim: int = 16):
        super().__init__()
        self.act_dim, self.level_dim, self.activation = act_dim, level_dim, F.mish
        self.register_buffer("sigmas", sigmas)
        self.level_embed1 = EnsembleLinear(2, level_dim, 2 * level_dim)
        self.level_embed2 = EnsembleLinear(2, 2 * level_dim, level_dim)
        self.fc1 = EnsembleLinear(2, obs_dim + act_dim + level_dim, hidden_dim)
        self.fc2 = EnsembleLinear(2, hidden_dim, hidden_dim)
        self.fc3 = EnsembleLinear(2, hidden_dim, hidden_dim)
        self.fc_out = EnsembleLinear(2, hidden_dim, 1)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, level: torch.Tensor | None = None) -> torch.Tensor:
        """obs (batch, obs_dim), actions (batch, act_dim), level (batch,) long or None = L-1 -> Q1 and Q2 (2, batch)."""
        embeddings = self.embed_levels()  # only L levels exist: embed each once, look up each sample's level
        e_l = embeddings[:, -1:].expand(-1, len(obs), -1) if level is None else embeddings[:, level]
        x = torch.cat([obs.expand(2, -1, -1), actions.expand(2, -1, -1), e_l], dim=-1)
        x = self.activation(self.fc1(x))
        x = self.activation(self.fc2(x))
        x = self.activation(self.fc3(x))
        return self.fc_out(x).squeeze(-1)

    def embed_levels(self) -> torch.Tensor:  # e_l of each critic for l = 0..L-1: (2, L, level_dim)
        levels = torch.arange(len(self.sigmas), device=self.sigmas.device)
        x = sinusoidal_encoding(levels, self.level_dim).expand(2, -1, -1)
        return self.level_embed2(self.activation(self.level_embed1(x)))


def make_critic(args: Args, obs_dim: int, act_dim: int) -> nn.Module:
    sigmas = sigma_schedule(args.sigma_max, args.sigma_min, args.num_levels)
    return NoiseConditionedTwinCritic(obs_dim, act_dim, sigmas).to(training_device(args))


# LANGEVIN SAMPLER
def level_step_sizes(step_lr: float, sigmas: torch.Tensor) -> torch.Tensor:
    """alpha_l = step_lr * (sigma_l / sigma_{L-1})^2, NCSN's step size at level l: 1.0 down to 1e-4 at the defaults."""
    return step_lr * (sigmas / sigmas[-1]) ** 2


def annealed_langevin_sample(q_fn, batch_size: int, act_dim: int, sigmas: torch.Tensor, steps_per_level: int,
                             step_lr: float, w: float | torch.Tensor, grad_norm: bool = True,
                             trace: list | None = None) -> torch.Tensor:
    """Draw a ~ pi(a|s) ~ exp(w Q(s,a)) by annealed Langevin dynamics on log pi = w Q + const (NCSN's sampler):
        a ~ U[-1, 1]^act_dim
        for l = 0..L-1, T times:  a <- clip(a + (alpha_l / 2) * w * grad_a q_fn(a, l) + sqrt(alpha_l) * z, -1, 1)
    q_fn(actions, level) is Q at the batch's states at noise level `level`, shape (batch,). With grad_norm, grad_a Q is
    scaled to unit length per sample, so the chain no longer targets exp(w Q) exactly: a step moves 0.5 alpha_l w,
    250 at level 0 (across the box to a face) and 0.025 at the clean level."""
    step_sizes = level_step_sizes(step_lr, sigmas)  # kept a tensor (no .item()): the chain traces as one graph
    actions = torch.rand(batch_size, act_dim, device=sigmas.device) * 2 - 1
    for level, step_size in enumerate(step_sizes):
        for _ in range(steps_per_level):
            with torch.enable_grad():  # callers run under no_grad; grad of the batch's sum = each row's own grad_a Q
                actions.requires_grad_(True)
                (grad,) = torch.autograd.grad(q_fn(actions, level).sum(), actions)
            step = grad / (grad.norm(dim=-1, keepdim=True) + 1e-8) if grad_norm else grad
            noise = torch.randn_like(actions)
            actions = (actions.detach() + 0.5 * step_size * w * step + step_size.sqrt() * noise).clamp(-1.0, 1.0)
            if trace is not None:  # sampler_statistics watches each step: |grad_a Q| before normalisation, actions
                trace.append((grad.norm(dim=-1), actions.detach()))
    return actions


def langevin_policy(critic: nn.Module, obs: torch.Tensor, args: Args, trace: list | None = None,
                    w: torch.Tensor | None = None) -> torch.Tensor:
    """a ~ pi(.|s): the sampler on Q1 + Q2; with N particles per state, the one with the highest min(Q1, Q2).
    w: --w, unless a caller passes its own (a tensor may change between calls)."""
    n, batch_size, w = args.num_particles, len(obs), args.w if w is None else w
    obs_n = obs.repeat(n, 1)  # particle k of state i sits at row k * batch + i

    def q_fn(actions, level):
        return critic(obs_n, actions, torch.full((len(obs_n),), level, device=obs.device)).sum(0)

    actions = annealed_langevin_sample(q_fn, n * batch_size, critic.act_dim, critic.sigmas, args.steps_per_level,
                                       args.step_lr, w, args.q_grad_norm, trace)
    if n == 1:
        return actions
    with torch.no_grad():
        best = critic(obs_n, actions).min(0).values.view(n, batch_size).argmax(0)
    return actions.view(n, batch_size, -1)[best, torch.arange(batch_size, device=obs.device)]


def act(policy, critic: nn.Module, obs: np.ndarray, args: Args) -> np.ndarray:
    with torch.no_grad():
        obs = torch.as_tensor(obs, dtype=torch.float32, device=next(critic.parameters()).device)
        return policy(critic, obs, args).cpu().numpy()


# UPDATE
def update_critic(batch, critic, critic_target, optimizer, policy, args: Args, chain_critic=None) -> dict:
    """One NC-LQL update, in the authors' order: TD step (at level L-1), smoothing step (same Adam), Polyak.
    a' is drawn by policy(chain_critic, s'): chain_critic is the online critic, or a copy of it."""
    obs, actions, rewards, next_obs, terminated = batch

    # TD TARGET: y = r_scale * r + gamma * (1 - terminated) * min_i Q_i_targ(s', a'), a' ~ pi(.|s') drawn
    # with the ONLINE critics (the policy is the online critic), valued by the Polyak targets.
    with torch.no_grad():
        next_actions = policy(critic if chain_critic is None else chain_critic, next_obs, args)
        next_q = critic_target(next_obs, next_actions).min(0).values
        td_target = args.reward_scale * rewards + args.gamma * (1.0 - terminated) * next_q

    # TD STEP. Each critic's loss is its own MSE; their sum gives each its own gradient.
    q = critic(obs, actions)
    td_loss = ((q - td_target) ** 2).mean(1)
    optimizer.zero_grad()
    td_loss.sum().backward()
    optimizer.step()

    # SMOOTHING STEP: Q_i(s, a + sigma_l z, l), l < L-1, regresses onto mean(Q1, Q2)(s, a, L-1), so level l learns
    # E[Q(s, a) | s, a + sigma_l z]: Q smoothed by N(0, sigma_l^2), weighted by the buffer's actions. The target is
    # taken from BEFORE the TD step (as the authors do); the noisy action is not clipped.
    smoothing_target = q.detach().mean(0)
    levels = torch.randint(0, len(critic.sigmas) - 1, (len(obs),), device=obs.device)  # l in 0..L-2
    noisy_actions = actions + critic.sigmas[levels, None] * torch.randn_like(actions)
    smoothing_loss = ((critic(obs, noisy_actions, levels) - smoothing_target) ** 2).mean(1)
    optimizer.zero_grad()
    smoothing_loss.sum().backward()
    optimizer.step()

    # POLYAK: targ <- tau * online + (1 - tau) * targ
    with torch.no_grad():
        for p_targ, p in zip(critic_target.parameters(), critic.parameters()):
            p_targ.lerp_(p, args.tau)
    return {"td_loss": td_loss.detach().mean(), "q": q.detach().mean(),
            "smoothing_loss": smoothing_loss.detach().mean()}


# THE METHOD ENDS HERE. What follows wraps it: speed, evaluation, statistics, tuning w, the loop, checks, checkpoints.


# FAST PATH (--compile, --bf16-chain), the one place that rebinds anything
def mish_one_exp(x: torch.Tensor) -> torch.Tensor:
    """F.mish up to rounding, with one exp: tanh(log(1 + e^x)) = n / (n + 2), n = e^x (e^x + 2); faster compiled."""
    e = torch.exp(x.clamp(max=20.0))  # beyond 20, mish(x) = x in float32
    n = e * (e + 2)
    return x * n / (n + 2)


def fast_path(args: Args, critic: nn.Module, critic_target: nn.Module | None = None, optimizer=None):
    policy, chain_critic = langevin_policy, critic
    if args.bf16_chain:
        chain_critic = bf16_copy(critic)
        optimizer.register_step_post_hook(lambda *_: copy_weights(chain_critic, critic))
    if args.compile:
        torch._dynamo.config.trace_autograd_ops = True  # trace autograd.grad instead of breaking the graph there
        torch._inductor.config.fallback_random = True  # compiled rand/randn draw what eager draws
        policy = torch.compile(langevin_policy, dynamic=False)
        modules = [module for module in (critic, critic_target) if module is not None]
        for module in {*modules, chain_critic}:
            module.activation = mish_one_exp
        for module in modules:
            module.compile(dynamic=False)
    return policy, chain_critic


def bf16_copy(critic: nn.Module) -> nn.Module:
    """bf16 weights, each layer casting its input. bf16 keeps grad_a Q's direction, all the normalised chain uses: a
    sampler that reads Q's values or |grad| must be checked against float32 (a fork's rule changed 35% of its picks)."""
    chain_critic = copy.deepcopy(critic).requires_grad_(False)
    for layer in chain_critic.modules():
        if isinstance(layer, EnsembleLinear):
            layer.to(torch.bfloat16).register_forward_pre_hook(lambda layer, inputs: inputs[0].bfloat16())
    return chain_critic


@torch.no_grad()  # after each Adam step: the copy takes the weights' values, not a place in the autograd graph
def copy_weights(target: nn.Module, source: nn.Module) -> None:
    for p_target, p in zip(target.parameters(), source.parameters()):
        p_target.copy_(p)


# EVALUATION
def evaluate(eval_envs: gym.vector.VectorEnv, policy, critic: nn.Module, args: Args) -> np.ndarray:
    with torch.random.fork_rng(), torch.no_grad():  # training's random stream goes on as if no evaluation ran
        torch.manual_seed(args.eval_seed)
        obs, _ = eval_envs.reset(seed=args.eval_seed)
        returns, finished = np.zeros(eval_envs.num_envs), np.zeros(eval_envs.num_envs, dtype=bool)
        while not finished.all():
            obs, _, _, _, infos = eval_envs.step(act(policy, critic, obs, args))
            if "episode" in infos.get("final_info", {}):  # a finished copy runs on (autoreset): count its first only
                first_finish = infos["final_info"]["_episode"] & ~finished
                returns[first_finish] = infos["final_info"]["episode"]["r"][first_finish]
                finished |= first_finish
    return returns


# WATCHING THE SAMPLER: sampler/ in TensorBoard (tests/results/README.md: Watching the sampler)
def probe_chains(policy, critic: nn.Module, probe_obs: torch.Tensor, args: Args, trace: list | None = None):
    obs = probe_obs.repeat_interleave(args.sampler_probe_chains, 0)
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(args.eval_seed)
        actions = policy(critic, obs, dataclasses.replace(args, num_particles=1), trace=trace)
    return actions.view(len(probe_obs), args.sampler_probe_chains, -1)


def entropy_bound(chains: torch.Tensor) -> torch.Tensor:
    """A bound on pi(.|s)'s entropy per dimension: the Gaussian's of each state's chains, std at least 1e-3 (-5.49)."""
    return 0.5 * math.log(2 * math.pi * math.e) + chains.std(1).clamp(min=1e-3).log().mean()


def sampler_statistics(critic: nn.Module, probe_obs: torch.Tensor, args: Args,
                       w: torch.Tensor | None = None) -> dict[str, float]:
    """The probe's chains after each group of steps (mean |grad_a Q|, shares on a face and on a corner, spread,
    entropy_bound); q_gain: min(Q1, Q2) at the chains' actions minus at uniform-random ones."""
    trace, num_states = [], len(probe_obs)
    actions = probe_chains(functools.partial(langevin_policy, w=w), critic, probe_obs, args, trace).flatten(0, 1)
    obs = probe_obs.repeat_interleave(args.sampler_probe_chains, 0)
    generator = torch.Generator(obs.device).manual_seed(args.eval_seed + 1)
    uniform = torch.rand(actions.shape, generator=generator, device=obs.device) * 2 - 1
    with torch.no_grad():
        q_gain = (critic(obs, actions).min(0).values - critic(obs, uniform).min(0).values).mean().item()
    stats = {"sampler/q_gain": q_gain}
    for group, steps in trace_groups(args).items():
        after = trace[steps[-1]][1].view(num_states, args.sampler_probe_chains, -1)
        on_face = after.abs() == 1.0
        stats[f"sampler/grad_norm/{group}"] = torch.stack([trace[step][0] for step in steps]).mean().item()
        stats[f"sampler/on_face/{group}"] = on_face.float().mean().item()
        stats[f"sampler/on_corner/{group}"] = on_face.all(-1).float().mean().item()
        stats[f"sampler/spread/{group}"] = after.std(1).mean().item()
        stats[f"sampler/entropy/{group}"] = entropy_bound(after).item()
    return stats


def trace_groups(args: Args) -> dict[str, range]:
    per_level = args.steps_per_level
    return {f"level_{level}": range(level * per_level, (level + 1) * per_level) for level in range(args.num_levels)}


# TUNING w (--autotune-w; beyond the paper)
def tune_w(w: torch.Tensor, policy, critic: nn.Module, probe_obs: torch.Tensor, args: Args) -> dict[str, float]:
    """w <- clip(w * exp(w_lr * (entropy_bound - target_entropy)), w_bounds) in place, as SAC tunes its temperature."""
    entropy = entropy_bound(probe_chains(policy, critic, probe_obs, args)).item()
    if not math.isfinite(entropy):
        raise FloatingPointError(f"non-finite policy entropy {entropy} when tuning w")
    w.copy_((w.log() + args.w_lr * (entropy - args.target_entropy)).exp().clamp(*args.w_bounds))
    return {"charts/entropy_bound": entropy, "charts/w": w.item()}


def tuned_w_tensor(w: float, device: torch.device) -> torch.Tensor:
    return torch.tensor(w, dtype=torch.float64, device=device)  # float64: at w = --w, the float --w's chain exactly


def watch_and_tune(writer, run, rb: ReplayBuffer, w, policy, critic, chain_critic, args: Args) -> None:
    if run.sampler_probe is None:
        generator = torch.Generator(device=rb.device).manual_seed(args.seed)
        idx = torch.randint(0, rb.size, (args.sampler_probe_states,), generator=generator, device=rb.device)
        run.sampler_probe = rb.obs[idx].clone()
    if args.autotune_w and run.num_updates >= args.w_tune_start and run.num_updates % args.w_tune_interval == 0:
        log_metrics(writer, tune_w(w, policy, chain_critic, run.sampler_probe, args), run.global_step)
    if args.sampler_stats_interval and (run.num_updates % args.sampler_stats_interval == 0 or eval_due(run, args)):
        log_metrics(writer, sampler_statistics(critic, run.sampler_probe, args, w), run.global_step)


# TRAINING LOOP
@dataclass
class Progress:
    """A run's counters, as its checkpoint holds them. learning_step: env steps after the warm-up (the authors')."""
    global_step: int = 0
    learning_step: int = 0
    num_updates: int = 0
    last_eval_step: int = 0
    eval_returns: list = dataclasses.field(default_factory=list)  # (global_step, mean return) per evaluation
    sampler_probe: torch.Tensor | None = None
    w: float | None = None


def train(args: Args, checkpoint: dict | None = None) -> dict:
    """Train, or go on with the run of --resume (main() passes its checkpoint); return a summary of the run."""
    obs_dim, act_dim, checkpoint, run_dir = check_run(args, checkpoint)  # all is checked before anything is written
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    envs = make_vector_env(args.env_id, args.num_envs, args.seed, False, os.path.basename(run_dir))
    video_folder = f"{os.path.basename(run_dir)}/eval" + (f"_from_{checkpoint['global_step']}" if checkpoint else "")
    eval_envs = make_vector_env(args.env_id, args.eval_episodes, args.eval_seed, args.capture_video, video_folder)
    critic = make_critic(args, obs_dim, act_dim)
    critic_target = make_critic(args, obs_dim, act_dim).requires_grad_(False)
    critic_target.load_state_dict(critic.state_dict())
    optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate, fused=True)
    rb = ReplayBuffer(args.buffer_size, obs_dim, act_dim, training_device(args))

    # The authors' count: learning_starts random env steps, then an update per vector step while learning_step <=
    # total_timesteps. `<=` makes the `+ 1`: 5,030,005 env steps, 1,000,001 updates.
    warmup_iterations = math.ceil(args.learning_starts / args.num_envs)
    num_iterations = warmup_iterations + args.total_timesteps // args.num_envs + 1
    run, refill_iterations = restore_run(checkpoint, args, critic, critic_target, optimizer, rb, envs, num_iterations,
                                         warmup_iterations) if checkpoint else (Progress(), 0)
    w = tuned_w_tensor(args.w if run.w is None else run.w, rb.device) if args.autotune_w else None
    writer = open_writer(args, run_dir, checkpoint)
    policy, chain_critic = fast_path(args, critic, critic_target, optimizer)
    policy = policy if w is None else functools.partial(policy, w=w)
    summary = {"run_dir": run_dir, "eval_returns": run.eval_returns, "checkpoint": None, "exit_code": 0}

    def save(path=f"{run_dir}/checkpoint.pt"):  # at each evaluation, at the end, and when the run stops
        if args.save_model:
            run.w = None if w is None else w.item()
            path = save_checkpoint(path, run_state(args, critic, critic_target, optimizer, rb, envs, run))
            summary["checkpoint"] = path if os.path.basename(path) == "checkpoint.pt" else summary["checkpoint"]

    stop_requested, handlers = on_stop_signals()
    obs, _ = envs.reset(seed=args.seed + run.global_step)  # a resumed run starts fresh episodes
    try:
        obs = refill_buffer(envs, obs, rb, policy, critic, refill_iterations, stop_requested, args)
        recent_returns, metrics = [], {}
        start = last_log = eta_clock = (time.time(), run.global_step)  # (time, env step); eta_clock: reset at learning
        for iteration in range(run.global_step // args.num_envs, num_iterations):
            # SELECT ACTION: uniform random during the warm-up, then the Langevin policy
            warmup = iteration < warmup_iterations
            eta_clock = (time.time(), run.global_step) if iteration == warmup_iterations else eta_clock
            actions = envs.action_space.sample() if warmup else act(policy, critic, obs, args)

            # STEP ENV
            next_obs, rewards, terminations, truncations, infos = envs.step(actions)
            run.global_step += args.num_envs
            recent_returns += log_episodes(writer, infos, run.global_step)

            # STORE: only `terminations` stops bootstrapping; a truncated transition keeps its real final obs
            rb.add(obs, real_next_obs(next_obs, infos), actions, rewards, terminations)
            obs = next_obs

            # UPDATE: one per vector step once the warm-up is done
            if not warmup:
                run.learning_step += args.num_envs
                metrics = update_critic(rb.sample(args.batch_size), critic, critic_target, optimizer, policy, args,
                                        chain_critic)
                run.num_updates += 1
                if run.num_updates % 100 == 1:
                    sps = int((run.global_step - start[1]) / (time.time() - start[0]))
                    log_metrics(writer, check_finite(metrics, run.global_step) | {"SPS": sps}, run.global_step)
                watch_and_tune(writer, run, rb, w, policy, critic, chain_critic, args)

            if stop_requested:  # STOP after the update, before a due evaluation (which the resumed run makes)
                raise KeyboardInterrupt
            # EVALUATE: every eval_frequency learning steps (none at learning step 0), and at total_timesteps
            if eval_due(run, args):
                check_finite(metrics, run.global_step)  # a run whose losses went non-finite stops here, unevaluated
                returns = evaluate(eval_envs, policy, critic, args)
                run.last_eval_step = run.learning_step  # only once it has run: a stop during it repeats it on resume
                run.eval_returns.append((run.global_step, float(returns.mean())))
                writer.add_scalar("eval/episodic_return", returns.mean(), run.global_step)
                print(f"eval   step {run.global_step:>9,}: return {returns.mean():8.1f} +- {returns.std():6.1f} "
                      f"over {len(returns)} episodes, after {run.num_updates:,} updates", flush=True)
                save()

            # LOG PROGRESS
            if time.time() - last_log[0] >= args.log_interval_s:
                last_log = print_progress(run, num_iterations * args.num_envs, last_log, eta_clock, recent_returns)
        check_finite(metrics, run.global_step)
        save()
    except KeyboardInterrupt:
        save()
        print(f"interrupted at step {run.global_step:,}; checkpoint: {summary['checkpoint'] or 'not saved'}",
              file=sys.stderr)
        summary["exit_code"] = 130
    except FloatingPointError as e:
        save(f"{run_dir}/checkpoint_nonfinite.pt")
        print(f"error: {e}; stopped. Last good checkpoint: {summary['checkpoint'] or 'none saved yet'}",
              file=sys.stderr)
        summary["exit_code"] = 1
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        for handle in (envs, eval_envs, writer):
            handle.close()
    return summary | {"num_updates": run.num_updates, "global_step": run.global_step}


def eval_due(run: Progress, args: Args) -> bool:
    return (run.learning_step - run.last_eval_step >= args.eval_frequency
            or run.last_eval_step < args.total_timesteps <= run.learning_step)


def refill_buffer(envs, obs: np.ndarray, rb: ReplayBuffer, policy, critic, num_iterations: int, stop_requested: list,
                  args: Args) -> np.ndarray:
    """A run resumed without its buffer first collects as many transitions as its warm-up made, with the policy."""
    last_log_time = time.time()
    for _ in range(num_iterations):
        actions = act(policy, critic, obs, args)
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        rb.add(obs, real_next_obs(next_obs, infos), actions, rewards, terminations)
        obs = next_obs
        if stop_requested:
            raise KeyboardInterrupt
        if (now := time.time()) - last_log_time >= args.log_interval_s:
            print(f"refilling the replay buffer: {rb.size:,} of {num_iterations * args.num_envs:,} transitions",
                  flush=True)
            last_log_time = now
    return obs


def on_stop_signals() -> tuple[list, dict]:
    """Ctrl-C or SIGTERM sets the flag (a second stops at once); returns it and the handlers it replaced."""
    stop_requested = []

    def request_stop(signum, frame):
        if stop_requested:
            raise KeyboardInterrupt
        stop_requested.append(signum)

    return stop_requested, {signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}


def check_finite(metrics: dict, global_step: int) -> dict:
    values = {key: float(value) for key, value in metrics.items()}
    if not all(math.isfinite(v) for v in values.values()):
        raise FloatingPointError(f"non-finite loss at step {global_step:,} ({values})")
    return values


def open_writer(args: Args, run_dir: str, checkpoint: dict | None):
    from torch.utils.tensorboard import SummaryWriter

    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args), name=os.path.basename(run_dir), save_code=True)
    # purge_step: TensorBoard drops what a stopped run logged after its checkpoint
    writer = SummaryWriter(run_dir, purge_step=checkpoint["global_step"] + 1 if checkpoint else None)
    table = "\n".join(f"|{key}|{value}|" for key, value in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    return writer


def log_episodes(writer, infos: dict, global_step: int) -> list[float]:
    if "episode" not in infos.get("final_info", {}):
        return []
    episode, ended = infos["final_info"]["episode"], np.flatnonzero(infos["final_info"]["_episode"])
    for i in ended:
        writer.add_scalar("charts/episodic_return", episode["r"][i], global_step)
        writer.add_scalar("charts/episodic_length", episode["l"][i], global_step)
    return [float(episode["r"][i]) for i in ended]


def log_metrics(writer, values: dict, global_step: int) -> None:
    """The update's losses under losses/, its mean Q under values/; a key with a '/' (sampler/...) as it is."""
    for key, value in values.items():
        tag = key if "/" in key else {"q": "values/q", "SPS": "charts/SPS"}.get(key, f"losses/{key}")
        writer.add_scalar(tag, value, global_step)


def print_progress(run: Progress, total_steps: int, last_log: tuple, eta_clock: tuple, recent_returns: list) -> tuple:
    now = time.time()
    sps, average_sps = ((run.global_step - step) / (now - t) for t, step in (last_log, eta_clock))
    eta_s = (total_steps - run.global_step) / average_sps if average_sps > 0 else 0.0
    eta = f"{int(eta_s // 3600)}:{time.strftime('%M:%S', time.gmtime(eta_s))}"
    last_return = f"{np.mean(recent_returns[-10:]):.1f}" if recent_returns else "n/a"
    print(f"step {run.global_step:>9,}/{total_steps:,} | SPS {sps:6.1f} | updates {run.num_updates:,} | return (last "
          f"10) {last_return} | ETA {eta}", flush=True)
    return now, run.global_step


# CHECKS
class UsageError(ValueError):
    """Bad input from the user: reported as one line on stderr, exit code 2, nothing written."""


def training_device(args: Args) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")


def flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


POSITIVE = ("total_timesteps", "num_envs", "buffer_size", "batch_size", "eval_frequency", "eval_episodes",
            "num_particles", "learning_rate", "step_lr", "w", "log_interval_s", "sampler_probe_states",
            "w_tune_interval")
NON_NEGATIVE = ("learning_starts", "seed", "eval_seed", "sampler_stats_interval", "w_lr", "w_tune_start")
TUNING = ("target_entropy", "w_lr", "w_tune_interval", "w_tune_start", "w_bounds")


def validate_args(args: Args) -> None:
    values, (w_min, w_max) = dataclasses.asdict(args), args.w_bounds
    tuning = [flag(k) for k in TUNING if values[k] != getattr(Args, k)]
    on_cpu = training_device(args).type == "cpu"
    bf16_matmul = (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()) if on_cpu \
        else torch.cuda.is_bf16_supported()
    floats = [k for k, v in values.items() if type(v) is float]
    rules = [(math.isfinite(values[k]), f"{flag(k)} is not a finite number: {values[k]}") for k in floats]
    rules += [(values[k] > 0, f"{flag(k)} must be positive, got {values[k]}") for k in POSITIVE]
    rules += [(values[k] >= 0, f"{flag(k)} must be >= 0, got {values[k]}") for k in NON_NEGATIVE]
    rules += method_checks(args) + [
        (args.batch_size <= args.buffer_size, f"--batch-size ({args.batch_size}) exceeds --buffer-size"),
        (0 <= args.gamma <= 1 and 0 < args.tau <= 1, f"need 0 <= --gamma <= 1 and 0 < --tau <= 1, got {args.gamma}, "
                                                     f"{args.tau}"),
        (args.sampler_probe_chains >= 2, "--sampler-probe-chains must be >= 2 (a spread needs two chains)"),
        (all(map(math.isfinite, args.w_bounds)) and 0 < w_min <= w_max,
         f"--w-bounds must be two finite numbers 0 < MIN <= MAX, got {w_min} {w_max}"),
        (not args.autotune_w or args.eval_checkpoint or w_min <= args.w <= w_max,
         f"--autotune-w starts at --w ({args.w}), which must lie within --w-bounds ({w_min}, {w_max})"),
        (-5.49 < args.target_entropy < 1.42, f"--target-entropy {args.target_entropy} cannot be reached: the bound "
         f"lies between -5.49 (deterministic) and 1.42 (every coordinate on a face)"),
        (args.autotune_w or not tuning, f"{', '.join(tuning)} act only with --autotune-w: add it, or drop them"),
        (not (args.resume and args.eval_checkpoint), "--resume and --eval-checkpoint exclude each other: give one"),
        (not args.track or importlib.util.find_spec("wandb"), "--track needs `pip install wandb`, or drop --track"),
        (not args.capture_video or importlib.util.find_spec("moviepy"),
         "--capture-video needs `pip install moviepy`, or drop --capture-video"),
        (not args.bf16_chain or bf16_matmul, "--bf16-chain needs bf16 matmul in hardware (CPU flags avx512_bf16 or "
         "amx_bf16, or a CUDA GPU), which this machine lacks: drop it (--no-bf16-chain to resume a run that had it)"),
        (not (args.compile and on_cpu and sys.platform != "win32" and shutil.which("g++") is None),
         "--compile on CPU needs g++ on PATH: install it (e.g. `apt install g++`), or drop --compile")]
    for ok, message in rules:
        if not ok:
            raise UsageError(message)


def method_checks(args: Args) -> list[tuple[bool, str]]:
    return [(args.steps_per_level > 0, f"--steps-per-level must be positive, got {args.steps_per_level}"),
            (args.sigma_min > 0, f"--sigma-min must be positive, got {args.sigma_min}"),
            (args.num_levels >= 2,
             f"--num-levels must be >= 2 (a clean level and a smoothed one), got {args.num_levels}"),
            (args.sigma_min < args.sigma_max, f"--sigma-min ({args.sigma_min}) must be below --sigma-max")]


def check_env(args: Args) -> tuple[int, int]:
    try:
        env = gym.make(args.env_id)
    except (gym.error.Error, ImportError) as e:
        raise UsageError(f"cannot make env {args.env_id!r}: {e} (list the ids with `python -c \"import gymnasium; "
                         f"gymnasium.pprint_registry()\"`)") from None
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    if not isinstance(act_space, gym.spaces.Box) or not np.isfinite([act_space.low, act_space.high]).all():
        raise UsageError(f"{args.env_id} has actions {act_space}; Langevin sampling needs continuous actions in a box "
                         f"with finite bounds (a Box space, as in Hopper-v4)")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise UsageError(f"{args.env_id} has observations {obs_space}; this script needs flat vector observations "
                         f"(wrap the env with gymnasium.wrappers.FlattenObservation)")
    check_memory(args, obs_space.shape[0], act_space.shape[0])
    return obs_space.shape[0], act_space.shape[0]


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def check_memory(args: Args, obs_dim: int, act_dim: int) -> None:
    device, cpu_memory = training_device(args), available_memory()
    needs = [(args.buffer_size * (2 * obs_dim + act_dim + 2) * 4, device.type, f"--buffer-size {args.buffer_size:,}",
              f"for the replay buffer ({obs_dim}-D observations)", "a smaller --buffer-size"),
             ((args.num_envs + args.eval_episodes) * 1.2 * 2**20, "cpu", f"--num-envs {args.num_envs:,} and "
              f"--eval-episodes {args.eval_episodes:,}", "at 1.2 MiB an env", "fewer")]
    for need, where, what, why, fix in needs:
        memory = torch.cuda.mem_get_info(device)[0] if where == "cuda" else cpu_memory
        if memory is not None and need > memory:
            raise UsageError(f"{what} needs {gib(need)} {why}, more than the {gib(memory)} of {where} memory "
                             f"available: give {fix}")


def gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:,.1f} GiB" if num_bytes >= 2**30 else f"{num_bytes / 2**20:.0f} MiB"


# CHECKPOINTS
# What a resumed run may change (the rest defines the method); an evaluated checkpoint must match NETWORK_OPTIONS.
RESUME_MAY_CHANGE = ("resume", "eval_checkpoint", "total_timesteps", "eval_frequency", "eval_episodes", "eval_seed",
                     "log_interval_s", "sampler_stats_interval", "sampler_probe_states", "sampler_probe_chains",
                     "save_model", "save_buffer", "track", "wandb_project_name", "wandb_entity", "capture_video",
                     "compile", "bf16_chain", "cuda")
NETWORK_OPTIONS = ("env_id", "num_levels", "sigma_max", "sigma_min")
ALGORITHM = "nclql"


def check_run(args: Args, checkpoint: dict | None) -> tuple[int, int, dict | None, str]:
    validate_args(args)
    obs_dim, act_dim = check_env(args)
    path = args.resume or args.eval_checkpoint
    checkpoint = checkpoint or (load_checkpoint(path) if path else None)
    if args.eval_checkpoint:
        check_same_options(args, checkpoint["args"], NETWORK_OPTIONS)
    elif checkpoint:  # --autotune-w tunes w on the probe's chains, which --eval-seed seeds: they stay too
        tuned_on = ("sampler_probe_states", "sampler_probe_chains", "eval_seed") if args.autotune_w else ()
        check_same_options(args, checkpoint["args"], [k for k in checkpoint["args"]
                                                      if k not in RESUME_MAY_CHANGE or k in tuned_on])
    run_dir = os.path.dirname(os.path.abspath(args.resume)) if args.resume else \
        f"runs/{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    return obs_dim, act_dim, checkpoint, run_dir


def load_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise UsageError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(f"{path} is not a readable checkpoint ({type(e).__name__}: truncated, or not from "
                         f"torch.save)") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("algorithm") != ALGORITHM:
        found = checkpoint.get("algorithm", "no algorithm named") if isinstance(checkpoint, dict) else "no dict"
        raise UsageError(f"{path} is not a checkpoint of {os.path.basename(__file__)} (it holds {found})")
    unknown = set(checkpoint["args"]) - {field.name for field in dataclasses.fields(Args)}
    if unknown:
        raise UsageError(f"{path} was written by another version of {os.path.basename(__file__)} (options "
                         f"{', '.join(sorted(unknown))})")
    checkpoint["args"] = dataclasses.asdict(Args()) | checkpoint["args"]  # an option added since takes its default
    return checkpoint


def load_critic(critic: nn.Module, state: dict, path: str) -> None:
    try:
        critic.load_state_dict(state)
    except RuntimeError:
        raise UsageError(f"{path} was written by another version of {os.path.basename(__file__)} (another critic)") \
            from None


def check_same_options(args: Args, saved: dict, names) -> None:
    for name in names:
        if getattr(args, name) != saved[name]:
            raise UsageError(f"{flag(name)} is {getattr(args, name)} here but {saved[name]} in the checkpoint; it "
                             f"cannot change: drop it or start a new run")


def run_state(args: Args, critic, critic_target, optimizer, rb: ReplayBuffer, envs, run: Progress) -> dict:
    on_cuda = next(critic.parameters()).device.type == "cuda"
    buffer = {name: getattr(rb, name)[: rb.size].cpu() for name in rb.FIELDS} | {"pos": rb.pos, "size": rb.size}
    return {"algorithm": ALGORITHM, "args": dataclasses.asdict(args), "critic": critic.state_dict(),
            "critic_target": critic_target.state_dict(), "optimizer": optimizer.state_dict(), **vars(run),
            "rng": {"torch": torch.get_rng_state(), "action_space": envs.action_space.np_random.bit_generator.state,
                    "cuda": torch.cuda.get_rng_state_all() if on_cuda else None},
            "replay_buffer": buffer if args.save_buffer else None}


def restore_run(checkpoint: dict, args: Args, critic, critic_target, optimizer, rb: ReplayBuffer, envs,
                num_iterations: int, warmup_iterations: int) -> tuple[Progress, int]:
    """run_state's inverse; returns the counters and the vector steps that refill the buffer (if none was saved)."""
    load_critic(critic, checkpoint["critic"], args.resume)
    load_critic(critic_target, checkpoint["critic_target"], args.resume)
    optimizer.load_state_dict(checkpoint["optimizer"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    envs.action_space.np_random.bit_generator.state = checkpoint["rng"]["action_space"]
    if next(critic.parameters()).device.type == "cuda" and checkpoint["rng"]["cuda"] is not None:
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
    if buffer := checkpoint["replay_buffer"]:
        for name in rb.FIELDS:
            getattr(rb, name)[: buffer["size"]] = buffer[name].to(rb.device)
        rb.pos, rb.size = buffer["pos"], buffer["size"]
    run = Progress(**{field.name: checkpoint[field.name] for field in dataclasses.fields(Progress)})
    probe = run.sampler_probe
    run.sampler_probe = probe.to(rb.device) if probe is not None and len(probe) == args.sampler_probe_states else None
    start_iteration = run.global_step // args.num_envs
    finished = start_iteration >= num_iterations
    refill_iterations = 0 if rb.size or finished else min(start_iteration, warmup_iterations)
    print(f"resumed {args.resume} at env step {run.global_step:,} ({run.num_updates:,} updates)"
          + (f"; no replay buffer saved: refilling {refill_iterations * args.num_envs:,} transitions with the policy "
             f"first" if refill_iterations else "")
          + (f"; it has reached --total-timesteps {args.total_timesteps:,}: give a larger one to go on" if finished
             else ""), flush=True)
    return run, refill_iterations


def save_checkpoint(path: str, state: dict) -> str:
    if os.path.basename(path) == "checkpoint.pt" and not all(v.isfinite().all() for v in state["critic"].values()):
        path = os.path.join(os.path.dirname(path), "checkpoint_nonfinite.pt")
        print(f"warning: non-finite critic: saving it to {path}, not over checkpoint.pt", file=sys.stderr)
    torch.save(state, f"{path}.tmp")
    os.replace(f"{path}.tmp", path)  # a kill during the save never truncates the last good checkpoint
    return path


# COMMAND LINE
def evaluate_checkpoint(args: Args, checkpoint: dict | None = None) -> dict:
    """--eval-checkpoint: --eval-episodes episodes with a saved critic (at its tuned w, unless --w gives another)."""
    obs_dim, act_dim, checkpoint, _ = check_run(args, checkpoint)
    critic = make_critic(args, obs_dim, act_dim)
    load_critic(critic, checkpoint["critic"], args.eval_checkpoint)
    policy, _ = fast_path(dataclasses.replace(args, bf16_chain=False), critic)  # a bf16 chain draws only a' to learn
    if checkpoint.get("w") is not None and args.w == checkpoint["args"]["w"]:
        policy = functools.partial(policy, w=tuned_w_tensor(checkpoint["w"], training_device(args)))
    run_name = f"{os.path.basename(os.path.dirname(os.path.abspath(args.eval_checkpoint)))}/eval_checkpoint"
    eval_envs = make_vector_env(args.env_id, args.eval_episodes, args.eval_seed, args.capture_video, run_name)
    returns = evaluate(eval_envs, policy, critic, args)
    eval_envs.close()
    print(f"{args.eval_checkpoint} (env step {checkpoint['global_step']:,}): return {returns.mean():.1f} +- "
          f"{returns.std():.1f}, min {returns.min():.1f}, max {returns.max():.1f} over {len(returns)} episodes")
    return {"returns": returns, "exit_code": 0}


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv)
    try:
        path = args.resume or args.eval_checkpoint
        checkpoint = load_checkpoint(path) if path else None
        if checkpoint:  # options not given are the checkpoint's (not its --resume; to evaluate, nor its --track,
            saved = checkpoint["args"] | {"resume": None, "eval_checkpoint": None}  # --capture-video, --bf16-chain)
            if args.eval_checkpoint:
                saved |= {"track": False, "capture_video": False, "bf16_chain": False}
            args = tyro.cli(Args, args=argv, default=Args(**saved))
        return (evaluate_checkpoint if args.eval_checkpoint else train)(args, checkpoint)["exit_code"]
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
