# Noise-Conditioned Langevin Q-Learning (NC-LQL), from "Direct Soft-Policy Sampling via Langevin Dynamics" (arXiv
# 2602.07873). No actor: the soft policy pi(a|s) ~ exp(w Q(s,a)) is sampled by annealed Langevin dynamics on a twin
# critic conditioned on a noise level. The chain climbs Q1 + Q2; with the default normalised gradient it does not
# sample exp(w Q) exactly. Defaults follow the authors' JAX code (ku-dmlab/NCLQL). README: the method, equation by
# equation.
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
    # Environment and protocol (the authors')
    env_id: str = "Hopper-v4"  # a Gymnasium id with bounded continuous actions (the authors ran MuJoCo v4)
    total_timesteps: int = 5_000_000  # env steps after the warm-up, as the authors count
    num_envs: int = 5  # parallel environments; one update is made per vector step
    buffer_size: int = 1_000_000  # replay buffer capacity, in transitions
    batch_size: int = 256  # transitions per update
    learning_starts: int = 30_000  # env steps of uniform-random actions before learning starts
    eval_frequency: int = 125_000  # evaluate every this many env steps after the warm-up, and at --total-timesteps
    eval_episodes: int = 20  # episodes per evaluation, one env each
    eval_seed: int = 0  # evaluation env i is seeded eval_seed + i at every evaluation, as the authors' evaluator

    # Critic learning
    gamma: float = 0.99  # discount factor
    tau: float = 0.005  # Polyak rate of the target critics
    learning_rate: float = 1e-4  # Adam's learning rate (both critics, both losses)
    reward_scale: float = 0.2  # rewards are multiplied by this in the TD target

    # Langevin sampler
    num_levels: int = 10  # L: the number of noise levels; level L-1 is the clean critic
    steps_per_level: int = 2  # T: Langevin steps at each noise level (L * T gradient steps per action)
    sigma_max: float = 0.1  # smoothing width of the smoothest level (level 0)
    sigma_min: float = 0.001  # sigma of level L-1 (clean, not smoothed): ends the geometric schedule of the sigma_l
    step_lr: float = 1e-4  # base step size: level l uses alpha_l = step_lr * (sigma_l / sigma_min)^2
    w: float = 500.0  # inverse temperature of pi(a|s) ~ exp(w Q(s,a)), Q = Q1 + Q2 here; --autotune-w starts from it
    q_grad_norm: bool = True  # step along grad_a Q's direction only (authors); off: Langevin on exp(w (Q1 + Q2))
    num_particles: int = 1  # N chains per state; the action with the highest min(Q1, Q2) is kept

    # Tuning w during training, as SAC tunes its temperature (beyond the paper; README: Tuning w)
    autotune_w: bool = False  # move log w toward --target-entropy (off: w stays --w, as the authors have it)
    target_entropy: float = -1.0  # nats per action dimension (entropy_bound, -5.49 to 1.42): SAC's -act_dim in all
    w_lr: float = 0.2  # each tuning step moves log w by w_lr * (measured entropy - target)
    w_tune_interval: int = 250  # updates between tuning steps; each draws the sampler's probe chains (README: cost)
    w_tune_start: int = 1000  # no tuning step before this update (the first critics are random)
    w_bounds: tuple[float, float] = (1.0, 1000.0)  # w stays within these (normalised, w past 1000 barely narrows pi)

    # Run, logging and checkpoints
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # names the run folder runs/{env_id}__{exp_name}__...
    seed: int = 1  # seeds torch, numpy, the training envs and their action space
    cuda: bool = True  # train on a CUDA GPU when there is one
    log_interval_s: float = 10.0  # seconds between progress lines
    sampler_stats_interval: int = 1000  # updates between the sampler/ statistics (and at each evaluation); 0: none
    sampler_probe_states: int = 16  # M: states the statistics watch, drawn from the buffer when learning starts
    sampler_probe_chains: int = 64  # C: chains per probe state
    track: bool = False  # track the run with Weights and Biases (needs `pip install wandb`)
    wandb_project_name: str = "nclql"  # Weights and Biases project (--track)
    wandb_entity: str | None = None  # Weights and Biases team (--track)
    capture_video: bool = False  # record the first evaluation env's episodes to `videos/` (`pip install moviepy`)
    save_model: bool = True  # save a checkpoint in `runs/{run_name}` at each evaluation, at the end, on Ctrl-C or kill
    save_buffer: bool = False  # also save the replay buffer, so that --resume goes on exactly (Hopper-v4: 108 MB at 1M)
    resume: str | None = None  # continue this checkpoint's run; options not given are the checkpoint's
    eval_checkpoint: str | None = None  # evaluate this checkpoint for --eval-episodes episodes and exit

    # Speed (the fast path; README: Speed)
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
    # SAME_STEP autoreset: a done env's true last obs is in infos["final_obs"] (gymnasium 1.x's NEXT_STEP hides it)
    return gym.vector.SyncVectorEnv([make_env(env_id, seed + i, i, capture_video, run_name) for i in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def real_next_obs(next_obs: np.ndarray, infos: dict) -> np.ndarray:
    """The observation each transition really ended in: the final one for envs that just finished."""
    real = next_obs.copy()
    if "final_obs" in infos:
        for i in np.flatnonzero(infos["_final_obs"]):
            real[i] = infos["final_obs"][i]
    return real


class ReplayBuffer:
    """Ring buffer of transitions on the training device. Only a true terminal state stops bootstrapping: a
    time-limit truncation keeps its real final obs as next_obs and bootstraps through it."""

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

    def state_dict(self) -> dict:
        state = {name: getattr(self, name)[: self.size].cpu() for name in self.FIELDS}
        return state | {"pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        for name in self.FIELDS:
            getattr(self, name)[: state["size"]] = state[name].to(self.device)
        self.pos, self.size = state["pos"], state["size"]


# CRITIC
class EnsembleLinear(nn.Module):
    """`num_members` independent linear layers run as one batched matmul: Q1 and Q2 in a single call."""

    def __init__(self, num_members: int, in_features: int, out_features: int):
        super().__init__()
        # Haiku's default init, as in the authors' code: truncated normal, std 1/sqrt(fan_in), zero bias.
        std = 1.0 / math.sqrt(in_features)
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


class NoiseConditionedTwinCritic(nn.Module):
    """Q1(s, a, l) and Q2(s, a, l), each concat(obs, action, e_l) -> 3 x 256 mish -> scalar, e_l the level's embedding.
    Level L-1 is the clean Q(s, a); level l < L-1 is Q smoothed by action noise of width sigma_l (buffer `sigmas`)."""

    def __init__(self, obs_dim: int, act_dim: int, sigmas: torch.Tensor, hidden_dim: int = 256, level_dim: int = 16,
                 activation=F.mish):
        super().__init__()
        self.act_dim, self.activation = act_dim, activation
        self.level_dim = level_dim
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
        # e_l is bf16 in the chain's copy (bf16_copy): concatenate in float32, then cast to the weights' dtype
        x = torch.cat([obs.expand(2, -1, -1), actions.expand(2, -1, -1), e_l.float()], dim=-1)
        x = self.activation(self.fc1(x.to(self.fc1.weight.dtype)))
        x = self.activation(self.fc2(x))
        x = self.activation(self.fc3(x))
        return self.fc_out(x).squeeze(-1)

    def embed_levels(self) -> torch.Tensor:  # e_l of each critic for l = 0..L-1: (2, L, level_dim)
        levels = torch.arange(len(self.sigmas), device=self.sigmas.device)
        x = sinusoidal_encoding(levels, self.level_dim).to(self.fc1.weight.dtype).expand(2, -1, -1)
        return self.level_embed2(self.activation(self.level_embed1(x)))


# LANGEVIN SAMPLER
def sigma_schedule(sigma_max: float, sigma_min: float, num_levels: int) -> torch.Tensor:
    """sigma_l, l = 0..L-1: geometric from sigma_max (smoothest, l=0) to sigma_min (clean, l=L-1)."""
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), num_levels))


def annealed_langevin_sample(q_fn, batch_size: int, act_dim: int, sigmas: torch.Tensor, steps_per_level: int,
                             step_lr: float, w: float | torch.Tensor, grad_norm: bool = True,
                             trace: list | None = None) -> torch.Tensor:
    """Draw a ~ pi(a|s) ~ exp(w Q(s,a)) by annealed Langevin dynamics on log pi = w Q + const (NCSN's sampler):
        a ~ U[-1, 1]^act_dim
        for l = 0..L-1, with alpha_l = step_lr * (sigma_l / sigma_{L-1})^2, T times:
            a <- clip(a + (alpha_l / 2) * w * grad_a q_fn(a, l) + sqrt(alpha_l) * z, -1, 1)
    q_fn(actions, level) is Q at the batch's states and noise level `level` (an int), shape (batch,). With grad_norm,
    grad_a Q is scaled to unit length per sample, so the chain no longer targets exp(w Q) exactly. At the defaults
    alpha_l runs from 1 down to 1e-4, and a normalised step moves 0.5 alpha_l w: 250 at level 0 (across the box to a
    face), 0.025 at the clean level."""
    step_sizes = step_lr * (sigmas / sigmas[-1]) ** 2  # a tensor, no .item(): torch.compile traces one graph
    actions = torch.rand(batch_size, act_dim, device=sigmas.device) * 2 - 1
    for level, step_size in enumerate(step_sizes):
        for _ in range(steps_per_level):
            with torch.enable_grad():  # callers run under no_grad; grad of the batch's sum = each row's own grad_a Q
                actions.requires_grad_(True)
                (grad,) = torch.autograd.grad(q_fn(actions, level).sum(), actions)
            step = grad / (grad.norm(dim=-1, keepdim=True) + 1e-8) if grad_norm else grad
            noise = torch.randn_like(actions)
            actions = (actions.detach() + 0.5 * step_size * w * step + step_size.sqrt() * noise).clamp(-1.0, 1.0)
            if trace is not None:  # sampler_statistics: each step's |grad_a Q| before normalisation, and its actions
                trace.append((grad.norm(dim=-1), actions.detach()))
    return actions


def langevin_policy(critic: nn.Module, obs: torch.Tensor, args: Args, trace: list | None = None,
                    w: torch.Tensor | None = None) -> torch.Tensor:
    """a ~ pi(.|s): the sampler on Q1 + Q2; with N particles per state, the one with the highest min(Q1, Q2). w is
    --w, or the tuned w of --autotune-w: a tensor, whose changes a compiled chain reads without compiling again."""
    n, batch_size, w = args.num_particles, len(obs), args.w if w is None else w
    obs_n = obs.repeat(n, 1)  # particle k of state i sits at row k * batch + i

    def q_fn(actions, level):
        return critic(obs_n, actions, torch.full((len(obs_n),), level, device=obs.device)).sum(0)

    actions = annealed_langevin_sample(q_fn, n * batch_size, critic.act_dim, critic.sigmas, args.steps_per_level,
                                       args.step_lr, w, args.q_grad_norm, trace)
    if n == 1:
        return actions
    with torch.no_grad():
        q_min = critic(obs_n, actions).min(0).values
        best = q_min.view(n, batch_size).argmax(0)
    return actions.view(n, batch_size, -1)[best, torch.arange(batch_size, device=obs.device)]


def act(policy, critic: nn.Module, obs: np.ndarray, args: Args) -> np.ndarray:
    """The Langevin policy's actions at a batch of env observations."""
    with torch.no_grad():
        obs = torch.as_tensor(obs, dtype=torch.float32, device=next(critic.parameters()).device)
        return policy(critic, obs, args).cpu().numpy()


# UPDATE
def update_critic(batch, critic, critic_target, optimizer, draw_next_actions, args: Args) -> dict:
    """One NC-LQL update, in the authors' order: TD step (at level L-1), smoothing step (same Adam), Polyak."""
    obs, actions, rewards, next_obs, terminated = batch

    # TD TARGET: y = r_scale * r + gamma * (1 - terminated) * min_i Q_i_targ(s', a'), a' ~ pi(.|s') drawn
    # with the ONLINE critics (the policy is the online critic), valued by the Polyak targets.
    with torch.no_grad():
        next_actions = draw_next_actions(next_obs)  # fast_path builds it: langevin_policy on the critic
        next_q = critic_target(next_obs, next_actions).min(0).values
        td_target = args.reward_scale * rewards + args.gamma * (1.0 - terminated) * next_q

    # TD STEP. Each critic's loss is its own MSE; their sum gives each its own gradient.
    q = critic(obs, actions)
    td_loss = ((q - td_target) ** 2).mean(1)
    optimizer.zero_grad()
    td_loss.sum().backward()
    optimizer.step()

    # SMOOTHING STEP: Q_i(s, a + sigma_l z, l), l < L-1, regresses onto mean(Q1, Q2)(s, a, L-1), so level l learns
    # the clean Q smoothed by N(0, sigma_l^2) (weighted by the buffer's actions). The target is taken from BEFORE the
    # TD step (as the authors do); the noisy action is not clipped.
    smoothing_target = q.detach().mean(0)
    levels = torch.randint(0, len(critic.sigmas) - 1, (len(obs),), device=obs.device)
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


# FAST PATH (--compile, --bf16-chain)
def mish_one_exp(x: torch.Tensor) -> torch.Tensor:
    """mish(x) = x tanh(softplus(x)) with one exp: tanh(log(1 + e^x)) = n / (n + 2), n = e^x (e^x + 2). The
    compiled chain uses it for speed (the measurement: README, Speed); the values are F.mish's up to rounding."""
    e = torch.exp(x.clamp(max=20.0))  # beyond 20, mish(x) = x in float32
    n = e * (e + 2)
    return x * n / (n + 2)


def compile_policy(policy):
    """torch.compile the whole Langevin chain, torch.autograd.grad included, as one graph per batch shape."""
    torch._dynamo.config.trace_autograd_ops = True  # trace autograd.grad instead of breaking the graph there
    torch._inductor.config.fallback_random = True  # compiled rand/randn draw what eager draws: same seed, same actions
    return torch.compile(policy, dynamic=False)


def bf16_copy(critic: nn.Module) -> nn.Module:
    """A copy of the critic with bfloat16 weights for the chain that draws a' (--bf16-chain; README: Speed)."""
    chain_critic = copy.deepcopy(critic).requires_grad_(False)
    for p in chain_critic.parameters():
        p.data = p.data.bfloat16()
    return chain_critic


def fast_path(critic: nn.Module, critic_target: nn.Module, args: Args, w: torch.Tensor | None = None):
    """The one place where --compile and --bf16-chain rebind anything. Returns the policy (acting, evaluation),
    draw_next_actions(s'), which draws the TD target's a' ~ pi(.|s'), and synced_chain_critic(), the critic that chain
    runs on: the online critic, or with --bf16-chain a bfloat16 copy given the critic's latest weights at each call.
    Both sample at w (--autotune-w), if given; tune_w measures the chains on synced_chain_critic() too."""
    policy, chain_critic = langevin_policy, critic
    if args.bf16_chain:
        chain_critic = bf16_copy(critic)  # a copy of the plain module, made before it is compiled
    if args.compile:
        policy = compile_policy(langevin_policy)
        for module in (critic, critic_target):  # in place: the update's losses and the target's Q(s', a')
            module.compile(dynamic=False)
    if w is not None:
        policy = functools.partial(policy, w=w)

    @torch.no_grad()  # the copy takes the weights' values, not a place in the critic's autograd graph
    def synced_chain_critic() -> nn.Module:
        if chain_critic is not critic:
            for p_chain, p in zip(chain_critic.parameters(), critic.parameters()):
                p_chain.copy_(p)
        return chain_critic

    def draw_next_actions(next_obs: torch.Tensor) -> torch.Tensor:
        return policy(synced_chain_critic(), next_obs, args)

    return policy, draw_next_actions, synced_chain_critic


# EVALUATION
def evaluate(eval_envs: gym.vector.VectorEnv, policy, critic: nn.Module, args: Args) -> np.ndarray:
    """One episode's return per copy of `eval_envs`, seeded by --eval-seed at every call, as the authors' evaluator."""
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


def probe_chains(policy, critic: nn.Module, probe_obs: torch.Tensor, args: Args, trace: list | None = None):
    """The policy's C chains (--sampler-probe-chains, one particle each) at each of the probe's M states: (M, C,
    act_dim). They draw from a random stream of their own, seeded by --eval-seed: the same draws at every call, so
    what they show moves with the critic (and w) only, and training's random stream goes on as if they never ran."""
    obs = probe_obs.repeat_interleave(args.sampler_probe_chains, 0)  # the chains of state i: rows i * C .. i * C + C-1
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(args.eval_seed)
        actions = policy(critic, obs, dataclasses.replace(args, num_particles=1), trace=trace)
    return actions.view(len(probe_obs), args.sampler_probe_chains, -1)


def entropy_bound(chains: torch.Tensor) -> torch.Tensor:
    """An upper bound on the entropy of pi(.|s), in nats per action dimension, from chains (states, chains, act_dim),
    averaged over states: the entropy of the Gaussian with the chains' per-dimension variances, 0.5 log(2 pi e) +
    mean_j log std_j. A law's entropy is at most the sum of its marginals', each at most that of the Gaussian of its
    variance; so the bound is exact for a Gaussian policy with independent dimensions (SAC's target, -act_dim, is -1
    here) and above the truth otherwise (uniform in the box: 0.87 against log 2 = 0.69). Chains clipped onto one face
    have std 0: the std is floored at 1e-3, so the bound stays finite (a deterministic policy: -5.49)."""
    return 0.5 * math.log(2 * math.pi * math.e) + chains.std(1).clamp(min=1e-3).log().mean()


def sampler_statistics(critic: nn.Module, probe_obs: torch.Tensor, args: Args,
                       w: torch.Tensor | None = None) -> dict[str, float]:
    """The sampler's state after each noise level, on the probe's chains (langevin_policy itself, eager, at w):
      grad_norm: mean |grad_a (Q1 + Q2)| before normalisation, over the level's steps;
      on_face, on_corner: the share of action coordinates on a face of the box, and of actions on a corner;
      spread: std of a state's C actions, averaged over states and dimensions (0: a deterministic policy);
      entropy: entropy_bound of the actions, in nats per dimension (--autotune-w tunes w on the last level's);
    and q_gain: mean min(Q1, Q2) at the chain's final actions minus at uniform-random ones (README: the sampler)."""
    trace, num_states = [], len(probe_obs)
    actions = probe_chains(functools.partial(langevin_policy, w=w), critic, probe_obs, args, trace).flatten(0, 1)
    obs = probe_obs.repeat_interleave(args.sampler_probe_chains, 0)
    generator = torch.Generator(obs.device).manual_seed(args.eval_seed + 1)  # + 1: not the chains' own start
    uniform = torch.rand(actions.shape, generator=generator, device=obs.device) * 2 - 1
    with torch.no_grad():
        q_gain = (critic(obs, actions).min(0).values - critic(obs, uniform).min(0).values).mean().item()
    stats = {"sampler/q_gain": q_gain}
    per_level = args.steps_per_level
    groups = {f"level_{level}": trace[level * per_level:(level + 1) * per_level] for level in range(args.num_levels)}
    for group, steps in groups.items():
        after = steps[-1][1].view(num_states, args.sampler_probe_chains, -1)  # the actions the group's last step leaves
        on_face = after.abs() == 1.0
        stats[f"sampler/grad_norm/{group}"] = torch.stack([raw_norm for raw_norm, _ in steps]).mean().item()
        stats[f"sampler/on_face/{group}"] = on_face.float().mean().item()
        stats[f"sampler/on_corner/{group}"] = on_face.all(-1).float().mean().item()
        stats[f"sampler/spread/{group}"] = after.std(1).mean().item()
        stats[f"sampler/entropy/{group}"] = entropy_bound(after).item()
    return stats


def draw_probe(rb: ReplayBuffer, args: Args) -> torch.Tensor:
    """The M states sampler_statistics watches: drawn once from the buffer when learning starts, with a generator of
    their own (training's random stream is not touched), and kept, so that the curves compare one critic to the next."""
    generator = torch.Generator(device=rb.device).manual_seed(args.seed)
    idx = torch.randint(0, rb.size, (args.sampler_probe_states,), generator=generator, device=rb.device)
    return rb.obs[idx].clone()


# TUNING w (--autotune-w; beyond the paper: README "Tuning w")
def tune_w(w: torch.Tensor, policy, critic: nn.Module, probe_obs: torch.Tensor, args: Args) -> dict[str, float]:
    """One step of the rule that tunes w as SAC tunes its temperature: measure the policy's entropy_bound on the
    probe's chains (what sampler/entropy/ shows at the clean level) and move log w toward the target:
        w <- clip(w * exp(w_lr * (entropy - target_entropy)), w_min, w_max)   (a step of log w)
    Too much entropy raises w (a colder policy: with the normalised gradient, longer steps toward a mode; without it,
    a sharper exp(w Q)); too little lowers it. w changes in place, and the policy reads it at every call: acting, the
    TD target's a' and evaluation all sample at the tuned w. train() passes the critic the TD target's chain runs
    on (with --bf16-chain, its bfloat16 copy: README, Tuning w). Returns the entropy measured and the new w."""
    entropy = entropy_bound(probe_chains(policy, critic, probe_obs, args)).item()
    if not math.isfinite(entropy):  # a non-finite critic: stop the run, as check_finite does, before w takes it
        raise FloatingPointError(f"non-finite policy entropy {entropy} when tuning w")
    w.copy_((w.log() + args.w_lr * (entropy - args.target_entropy)).exp().clamp(*args.w_bounds))
    return {"charts/entropy_bound": entropy, "charts/w": w.item()}


def tuned_w_tensor(w: float, device: torch.device) -> torch.Tensor:
    """--autotune-w's w, which tune_w changes in place and the policy reads at each call. float64: at w = --w the
    chain draws exactly what it draws at the float --w."""
    return torch.tensor(w, dtype=torch.float64, device=device)


# TRAINING LOOP
def training_device(args: Args) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")


def make_critic(args: Args, obs_dim: int, act_dim: int) -> nn.Module:
    sigmas = sigma_schedule(args.sigma_max, args.sigma_min, args.num_levels)
    activation = mish_one_exp if args.compile else F.mish
    return NoiseConditionedTwinCritic(obs_dim, act_dim, sigmas, activation=activation).to(training_device(args))


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

    # The authors' count: learning_starts random env steps, then an update per vector step while learning_step (env
    # steps after the warm-up) <= total_timesteps. `<=` makes the `+ 1`: 5,030,005 env steps, 1,000,001 updates.
    warmup_iterations = math.ceil(args.learning_starts / args.num_envs)
    num_iterations = warmup_iterations + args.total_timesteps // args.num_envs + 1
    global_step, learning_step, num_updates, last_eval_step, eval_returns, probe, tuned_w = 0, 0, 0, 0, [], None, None
    if checkpoint:
        global_step, learning_step, num_updates, last_eval_step, eval_returns, probe, tuned_w = restore_run(
            checkpoint, args, critic, critic_target, optimizer, rb, envs)
    w = tuned_w_tensor(args.w if tuned_w is None else tuned_w, rb.device) if args.autotune_w else None
    writer = open_writer(args, run_dir, checkpoint)
    policy, draw_next_actions, synced_chain_critic = fast_path(critic, critic_target, args, w)
    summary = {"run_dir": run_dir, "eval_returns": eval_returns, "checkpoint": None, "exit_code": 0}

    def save(path=f"{run_dir}/checkpoint.pt"):  # at each evaluation, at the end, and when the run stops
        if args.save_model:
            counters = {"global_step": global_step, "learning_step": learning_step, "num_updates": num_updates,
                        "last_eval_step": last_eval_step, "eval_returns": eval_returns, "sampler_probe": probe,
                        "w": None if w is None else w.item()}
            path = save_checkpoint(path, run_state(args, critic, critic_target, optimizer, rb, envs, counters))
            if os.path.basename(path) == "checkpoint.pt":  # not a non-finite critic, saved beside it
                summary["checkpoint"] = path

    # A resumed run starts fresh episodes; without its replay buffer it first refills it (refill_buffer: why, how).
    start_iteration = global_step // args.num_envs
    refill_iterations = 0 if rb.size or start_iteration >= num_iterations else min(start_iteration, warmup_iterations)
    if checkpoint:
        print_resume_status(args, global_step, num_updates, refill_iterations, start_iteration >= num_iterations)
    previous_handlers = defer_stop_signals(stop_requested := [])  # Ctrl-C, kill: stop after this vector step
    obs, _ = envs.reset(seed=args.seed + global_step)
    try:
        if refill_iterations:
            obs = refill_buffer(envs, obs, rb, policy, critic, refill_iterations, stop_requested, args)
        recent_returns, metrics, start_time, start_step = [], {}, time.time(), global_step
        last_log_time, last_log_step = eta_clock = (start_time, global_step)  # eta_clock: reset as the warm-up ends
        for iteration in range(start_iteration, num_iterations):
            # SELECT ACTION: uniform random during the warm-up, then the Langevin policy
            warmup = iteration < warmup_iterations
            eta_clock = (time.time(), global_step) if iteration == warmup_iterations else eta_clock
            actions = envs.action_space.sample() if warmup else act(policy, critic, obs, args)

            # STEP ENV
            next_obs, rewards, terminations, truncations, infos = envs.step(actions)
            global_step += args.num_envs
            recent_returns += log_episodes(writer, infos, global_step)

            # STORE: only `terminations` stops bootstrapping; a truncated transition keeps its real final obs
            rb.add(obs, real_next_obs(next_obs, infos), actions, rewards, terminations)
            obs = next_obs

            # UPDATE: one per vector step once the warm-up is done
            if not warmup:
                probe = draw_probe(rb, args) if probe is None else probe  # the states sampler_statistics watches
                learning_step += args.num_envs
                metrics = update_critic(rb.sample(args.batch_size), critic, critic_target, optimizer,
                                        draw_next_actions, args)
                num_updates += 1
                if num_updates % 100 == 1:
                    sps = (global_step - start_step) / (time.time() - start_time)
                    log_metrics(writer, check_finite(metrics, global_step) | {"SPS": int(sps)}, global_step)
                if args.sampler_stats_interval and (num_updates - 1) % args.sampler_stats_interval == 0:
                    log_metrics(writer, sampler_statistics(critic, probe, args, w), global_step)
                if args.autotune_w and num_updates >= args.w_tune_start and num_updates % args.w_tune_interval == 0:
                    log_metrics(writer, tune_w(w, policy, synced_chain_critic(), probe, args), global_step)

            if stop_requested:  # STOP after the update, before a due evaluation (which the resumed run makes)
                raise KeyboardInterrupt
            # EVALUATE: every eval_frequency learning steps (the authors' Interval: none at learning step 0), and on
            # reaching total_timesteps if the schedule has no evaluation there
            if (learning_step - last_eval_step >= args.eval_frequency
                    or last_eval_step < args.total_timesteps <= learning_step):
                check_finite(metrics, global_step)  # a run whose losses went non-finite stops here, before it evaluates
                returns = evaluate(eval_envs, policy, critic, args)
                last_eval_step = learning_step  # only once it has run: a stop during it repeats it on resume
                eval_returns.append((global_step, float(returns.mean())))
                writer.add_scalar("eval/episodic_return", returns.mean(), global_step)
                if args.sampler_stats_interval:
                    log_metrics(writer, sampler_statistics(critic, probe, args, w), global_step)
                print(f"eval   step {global_step:>9,}: return {returns.mean():8.1f} +- {returns.std():6.1f} "
                      f"over {len(returns)} episodes, after {num_updates:,} updates", flush=True)
                save()

            # LOG PROGRESS
            if (now := time.time()) - last_log_time >= args.log_interval_s:
                sps = (global_step - last_log_step) / (now - last_log_time)
                print_progress(global_step, num_iterations * args.num_envs, sps, eta_clock, num_updates, recent_returns)
                last_log_time, last_log_step = now, global_step
        check_finite(metrics, global_step)
        save()
    except KeyboardInterrupt:
        save()
        print(f"interrupted at step {global_step:,}; checkpoint: {summary['checkpoint'] or 'not saved'}",
              file=sys.stderr)
        summary["exit_code"] = 130
    except FloatingPointError as e:
        save(f"{run_dir}/checkpoint_nonfinite.pt")
        print(f"error: {e}; stopped. Last good checkpoint: {summary['checkpoint'] or 'none saved yet'}",
              file=sys.stderr)
        summary["exit_code"] = 1
    finally:
        restore_signal_handlers(previous_handlers)
        for handle in (envs, eval_envs, writer):
            handle.close()
    return summary | {"num_updates": num_updates, "global_step": global_step}


# CHECKS AND CHECKPOINTS: what train() above calls to refuse bad input, save and resume a run, and log it. The method
# ends above this line: a fork that changes the method need not read below it.
class UsageError(ValueError):
    """Bad input from the user: reported as one line on stderr, exit code 2, nothing written."""


def validate_args(args: Args) -> None:
    """Reject impossible options before anything is created; non-finite floats first (nan fails any comparison)."""
    values = dataclasses.asdict(args)
    checks = [(math.isfinite(v), f"--{k.replace('_', '-')} is not a finite number: {v}")
              for k, v in values.items() if isinstance(v, float)]
    checks += [(values[k] > 0, f"--{k.replace('_', '-')} must be positive, got {values[k]}") for k in [
        "total_timesteps", "num_envs", "buffer_size", "batch_size", "eval_frequency", "eval_episodes",
        "steps_per_level", "num_particles", "learning_rate", "sigma_min", "step_lr", "log_interval_s",
        "sampler_probe_states", "w_tune_interval"]]
    checks += [(values[k] >= 0, f"--{k.replace('_', '-')} must be >= 0, got {values[k]}")
               for k in ["learning_starts", "seed", "eval_seed", "sampler_stats_interval", "w_lr", "w_tune_start"]]
    w_min, w_max = args.w_bounds
    tuning_options = [f"--{k.replace('_', '-')}" for k in ("target_entropy", "w_lr", "w_tune_interval", "w_tune_start",
                                                           "w_bounds") if values[k] != getattr(Args, k)]
    checks += [(all(math.isfinite(b) for b in args.w_bounds) and 0 < w_min <= w_max,
                f"--w-bounds must be two finite numbers 0 < MIN <= MAX, got {w_min} {w_max}"),
               (not args.autotune_w or args.eval_checkpoint or w_min <= args.w <= w_max,
                f"--autotune-w starts at --w ({args.w}), which must lie within --w-bounds ({w_min}, {w_max})"),
               (-5.49 < args.target_entropy < 1.42, f"--target-entropy {args.target_entropy} cannot be reached: the "
                f"bound lies between -5.49 (a deterministic policy) and 1.42 (every coordinate on a face, half each)"),
               (args.autotune_w or not tuning_options, f"{', '.join(tuning_options)} act only with --autotune-w: add "
                                                       f"it, or drop them")]
    checks += [(args.sampler_probe_chains >= 2, f"--sampler-probe-chains must be >= 2 (a spread needs two chains), got "
                                                f"{args.sampler_probe_chains}")]
    on_cpu = training_device(args).type == "cpu"
    bf16_matmul = not args.bf16_chain or ((torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
                                          if on_cpu else torch.cuda.is_bf16_supported())
    checks += [
        (args.w > 0, f"--w must be positive (the policy is exp(w Q): w <= 0 ignores or minimises Q), got {args.w}"),
        (args.num_levels >= 2, f"--num-levels must be >= 2 (a clean level and a smoothed one), got {args.num_levels}"),
        (args.sigma_min < args.sigma_max, f"--sigma-min ({args.sigma_min}) must be below --sigma-max"),
        (args.batch_size <= args.buffer_size,
         f"--batch-size ({args.batch_size}) exceeds --buffer-size ({args.buffer_size})"),
        (0 <= args.gamma <= 1 and 0 < args.tau <= 1, f"need 0 <= --gamma <= 1 and 0 < --tau <= 1, got {args.gamma}, "
                                                     f"{args.tau}"),
        (not (args.resume and args.eval_checkpoint), "--resume and --eval-checkpoint exclude each other: give one"),
        (not args.track or importlib.util.find_spec("wandb"), "--track needs `pip install wandb`, or drop --track"),
        (not args.capture_video or importlib.util.find_spec("moviepy"),
         "--capture-video needs `pip install moviepy`, or drop --capture-video"),
        (bf16_matmul, "--bf16-chain needs bf16 matmul in hardware (CPU flags avx512_bf16 or amx_bf16, or a CUDA GPU "
                      "with bf16), which this machine lacks: drop it (--no-bf16-chain to resume a run that had it)"),
        (not (args.compile and on_cpu and sys.platform != "win32" and shutil.which("g++") is None),
         "--compile on CPU needs g++ on PATH: install it (e.g. `apt install g++`), or drop --compile")]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


def check_env(args: Args) -> tuple[int, int]:
    """Make the env once, check that this method applies to it and that the run fits in memory; return (obs_dim,
    act_dim)."""
    env_id = args.env_id
    try:
        env = gym.make(env_id)
    except (gym.error.Error, ImportError) as e:
        raise UsageError(f"cannot make env {env_id!r}: {e} (list the ids with `python -c \"import gymnasium; "
                         f"gymnasium.pprint_registry()\"`)") from None
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    if not isinstance(act_space, gym.spaces.Box) or not np.isfinite([act_space.low, act_space.high]).all():
        raise UsageError(f"{env_id} has actions {act_space}; Langevin sampling needs continuous actions in a box with "
                         f"finite bounds (a Box space, as in Hopper-v4)")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise UsageError(f"{env_id} has observations {obs_space}; this script needs flat vector observations "
                         f"(wrap the env with gymnasium.wrappers.FlattenObservation)")
    check_memory(args, obs_space.shape[0], act_space.shape[0])
    return obs_space.shape[0], act_space.shape[0]


ENV_BYTES = 1.2 * 2**20  # resident memory of one MuJoCo env (Hopper-v4 and Humanoid-v4 alike, measured on Linux)


def available_memory() -> int | None:
    """Bytes of memory the system can still give (Linux's MemAvailable); None where it cannot tell."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def size(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:,.1f} GiB" if num_bytes >= 2**30 else f"{num_bytes / 2**20:.0f} MiB"


def check_memory(args: Args, obs_dim: int, act_dim: int) -> None:
    """Refuse, before anything is allocated, a replay buffer or a number of envs that cannot fit in the memory
    available (a traceback from deep inside torch or MuJoCo, or the machine swapping, otherwise)."""
    device = training_device(args)
    memory = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else available_memory()
    buffer_bytes = args.buffer_size * (2 * obs_dim + act_dim + 2) * 4  # ReplayBuffer's five float32 fields
    if memory is not None and buffer_bytes > memory:
        raise UsageError(f"--buffer-size {args.buffer_size:,} needs {size(buffer_bytes)} for the replay buffer "
                         f"({obs_dim}-D observations), more than the {size(memory)} of {device.type} memory available: "
                         f"give a smaller --buffer-size")
    memory = available_memory()
    envs_bytes = (args.num_envs + args.eval_episodes) * ENV_BYTES
    if memory is not None and envs_bytes > memory:
        raise UsageError(f"--num-envs {args.num_envs:,} and --eval-episodes {args.eval_episodes:,} (one env each) "
                         f"need {size(envs_bytes)} at about {ENV_BYTES / 2**20:.1f} MiB an env, more than the "
                         f"{size(memory)} of memory available: give fewer")


def check_run(args: Args, checkpoint: dict | None) -> tuple[int, int, dict | None, str]:
    """What train() checks before it writes anything: the options, the env and the checkpoint of --resume, which may
    change only RESUME_MAY_CHANGE. Returns obs_dim, act_dim, the checkpoint (None for a new run) and the run folder."""
    validate_args(args)
    obs_dim, act_dim = check_env(args)
    checkpoint = checkpoint or (load_checkpoint(args.resume) if args.resume else None)
    if checkpoint:  # with --autotune-w the probe is what w is tuned on: it may not change either
        check_same_options(args, checkpoint["args"], [k for k in checkpoint["args"] if k not in RESUME_MAY_CHANGE
                                                      or (args.autotune_w and k.startswith("sampler_probe"))])
    run_dir = os.path.dirname(os.path.abspath(args.resume)) if args.resume else \
        f"runs/{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    return obs_dim, act_dim, checkpoint, run_dir


# What a resumed run may change (the rest defines the method); an evaluated checkpoint must match NETWORK_OPTIONS.
RESUME_MAY_CHANGE = ("resume", "eval_checkpoint", "total_timesteps", "eval_frequency", "eval_episodes", "eval_seed",
                     "log_interval_s", "sampler_stats_interval", "sampler_probe_states", "sampler_probe_chains",
                     "save_model", "save_buffer", "track", "wandb_project_name", "wandb_entity", "capture_video",
                     "compile", "bf16_chain", "cuda")
NETWORK_OPTIONS = ("env_id", "num_levels", "sigma_max", "sigma_min")


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint of this script, or raise a UsageError that says what is wrong with the file."""
    if not os.path.isfile(path):
        raise UsageError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(f"{path} is not a readable checkpoint ({type(e).__name__}: truncated, or not from "
                         f"torch.save)") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("algorithm") != "nclql":
        found = checkpoint.get("algorithm", "no algorithm named") if isinstance(checkpoint, dict) else "no dict"
        raise UsageError(f"{path} is not a checkpoint of {os.path.basename(__file__)} (it holds {found})")
    checkpoint["args"].pop("torch_deterministic", None)  # an option of older versions, which had no effect
    unknown = set(checkpoint["args"]) - {field.name for field in dataclasses.fields(Args)}
    if unknown:
        raise UsageError(f"{path} was written by another version of {os.path.basename(__file__)} (options "
                         f"{', '.join(sorted(unknown))})")
    # An option added since the checkpoint was written takes its default, which is the behaviour it was written with
    checkpoint["args"] = dataclasses.asdict(Args()) | checkpoint["args"]
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
            raise UsageError(f"--{name.replace('_', '-')} is {getattr(args, name)} here but {saved[name]} in the "
                             f"checkpoint; it cannot change: drop it or start a new run")


def run_state(args: Args, critic: nn.Module, critic_target: nn.Module, optimizer, rb: ReplayBuffer, envs,
              counters: dict) -> dict:
    """What a checkpoint holds: the networks, Adam, the options, the counters, the random states and, with
    --save-buffer, the replay buffer."""
    on_cuda = next(critic.parameters()).device.type == "cuda"
    return {"algorithm": "nclql", "args": dataclasses.asdict(args), "critic": critic.state_dict(),
            "critic_target": critic_target.state_dict(), "optimizer": optimizer.state_dict(), **counters,
            "rng": {"torch": torch.get_rng_state(), "action_space": envs.action_space.np_random.bit_generator.state,
                    "cuda": torch.cuda.get_rng_state_all() if on_cuda else None},
            "replay_buffer": rb.state_dict() if args.save_buffer else None}


def restore_run(checkpoint: dict, args: Args, critic: nn.Module, critic_target: nn.Module, optimizer,
                rb: ReplayBuffer, envs) -> tuple:
    """Put a checkpoint's state back (run_state's inverse); return its counters, the sampler's probe (None from an
    older checkpoint, or one of another --sampler-probe-states: drawn again when learning goes on) and the tuned w
    (None without --autotune-w)."""
    load_critic(critic, checkpoint["critic"], args.resume)
    load_critic(critic_target, checkpoint["critic_target"], args.resume)
    optimizer.load_state_dict(checkpoint["optimizer"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    envs.action_space.np_random.bit_generator.state = checkpoint["rng"]["action_space"]
    if next(critic.parameters()).device.type == "cuda" and checkpoint["rng"]["cuda"] is not None:
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
    if checkpoint["replay_buffer"]:
        rb.load_state_dict(checkpoint["replay_buffer"])
    probe = checkpoint.get("sampler_probe")
    probe = probe.to(rb.device) if probe is not None and len(probe) == args.sampler_probe_states else None
    return (*(checkpoint[key] for key in ("global_step", "learning_step", "num_updates", "last_eval_step",
                                          "eval_returns")), probe, checkpoint.get("w"))


def save_checkpoint(path: str, state: dict) -> str:
    """Write a checkpoint atomically and return its path. A non-finite critic never replaces the last good
    checkpoint.pt: it is written beside it, to checkpoint_nonfinite.pt."""
    if os.path.basename(path) == "checkpoint.pt" and not all(v.isfinite().all() for v in state["critic"].values()):
        path = os.path.join(os.path.dirname(path), "checkpoint_nonfinite.pt")
        print(f"warning: non-finite critic: saving it to {path}, not over checkpoint.pt", file=sys.stderr)
    torch.save(state, f"{path}.tmp")
    os.replace(f"{path}.tmp", path)  # a kill during the save never truncates the last good checkpoint
    return path


def refill_buffer(envs, obs: np.ndarray, rb: ReplayBuffer, policy, critic: nn.Module, num_iterations: int,
                  stop_requested: list, args: Args) -> np.ndarray:
    """A run resumed without its replay buffer first collects as many transitions as its warm-up made, with the policy
    (its critic is trained), without updates and without counting them; then it learns from a full buffer again."""
    last_log_time = time.time()
    for _ in range(num_iterations):
        actions = act(policy, critic, obs, args)
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        rb.add(obs, real_next_obs(next_obs, infos), actions, rewards, terminations)
        obs = next_obs
        if stop_requested:
            raise KeyboardInterrupt
        if time.time() - last_log_time >= args.log_interval_s:
            print(f"refilling the replay buffer: {rb.size:,} of {num_iterations * args.num_envs:,} transitions",
                  flush=True)
            last_log_time = time.time()
    return obs


def defer_stop_signals(stop_requested: list) -> dict:
    """Ctrl-C or `kill` (SIGTERM) appends to stop_requested, and train() stops once the vector step under way is done,
    so that a checkpoint never holds half an update; a second one stops at once, even mid-update. Either way the run
    saves what it has. Returns the handlers that were in place."""
    def request_stop(signum, frame):
        if stop_requested:
            raise KeyboardInterrupt
        stop_requested.append(signum)

    return {signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}


def restore_signal_handlers(handlers: dict) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def check_finite(metrics: dict, global_step: int) -> dict:
    """The metrics as floats (.item() syncs a GPU: every 100 updates, and before a checkpoint); a non-finite one
    raises FloatingPointError, which stops the run."""
    values = {key: value.item() for key, value in metrics.items()}
    if not all(math.isfinite(v) for v in values.values()):
        raise FloatingPointError(f"non-finite loss at step {global_step:,} ({values})")
    return values


def open_writer(args: Args, run_dir: str, checkpoint: dict | None):
    """TensorBoard in run_dir (and Weights and Biases with --track), with the options as a table."""
    from torch.utils.tensorboard import SummaryWriter

    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args), name=os.path.basename(run_dir), save_code=True)
    # purge_step: TensorBoard drops what a stopped run logged after its checkpoint
    writer = SummaryWriter(run_dir, purge_step=checkpoint["global_step"] + 1 if checkpoint else None)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % "\n".join(
        f"|{key}|{value}|" for key, value in vars(args).items()))
    return writer


def log_episodes(writer, infos: dict, global_step: int) -> list[float]:
    """Log the episodes that ended at this vector step; return their returns."""
    returns = []
    if "episode" in infos.get("final_info", {}):
        episode = infos["final_info"]["episode"]
        for i in np.flatnonzero(infos["final_info"]["_episode"]):
            returns.append(float(episode["r"][i]))
            writer.add_scalar("charts/episodic_return", episode["r"][i], global_step)
            writer.add_scalar("charts/episodic_length", episode["l"][i], global_step)
    return returns


def log_metrics(writer, values: dict, global_step: int) -> None:
    """update_critic's losses under losses/, its mean Q under values/; a key with a '/' (sampler/...) as it is."""
    for key, value in values.items():
        tag = key if "/" in key else {"q": "values/q", "SPS": "charts/SPS"}.get(key, f"losses/{key}")
        writer.add_scalar(tag, value, global_step)


def print_progress(global_step: int, total_steps: int, sps: float, eta_clock: tuple, num_updates: int,
                   recent_returns: list) -> None:
    """SPS: since the last line (an evaluation in it slows it); ETA: at the average rate since eta_clock's (time,
    env step), the warm-up's end or the resume, evaluations included."""
    average_sps = (global_step - eta_clock[1]) / (time.time() - eta_clock[0])
    eta_s = (total_steps - global_step) / average_sps if average_sps > 0 else 0.0
    eta = f"{int(eta_s // 3600)}:{time.strftime('%M:%S', time.gmtime(eta_s))}"
    last_return = f"{np.mean(recent_returns[-10:]):.1f}" if recent_returns else "n/a"
    print(f"step {global_step:>9,}/{total_steps:,} | SPS {sps:6.1f} | updates {num_updates:,} | return (last 10) "
          f"{last_return} | ETA {eta}", flush=True)


def print_resume_status(args: Args, global_step: int, num_updates: int, refill_iterations: int, finished: bool) -> None:
    status = f"resumed {args.resume} at env step {global_step:,} ({num_updates:,} updates)"
    if refill_iterations:
        status += (f"; no replay buffer saved: refilling {refill_iterations * args.num_envs:,} transitions with the "
                   f"policy first")
    if finished:
        status += f"; it has reached --total-timesteps {args.total_timesteps:,}: give a larger one to go on"
    print(status, flush=True)


# COMMAND LINE
def evaluate_checkpoint(args: Args, checkpoint: dict | None = None) -> dict:
    """--eval-checkpoint: run --eval-episodes episodes with a saved critic and print their returns; train nothing.
    A run of --autotune-w is evaluated at its tuned w, as the run evaluated, unless --w gives another."""
    validate_args(args)
    obs_dim, act_dim = check_env(args)
    checkpoint = checkpoint or load_checkpoint(args.eval_checkpoint)
    check_same_options(args, checkpoint["args"], NETWORK_OPTIONS)
    critic = make_critic(args, obs_dim, act_dim)
    load_critic(critic, checkpoint["critic"], args.eval_checkpoint)
    policy = compile_policy(langevin_policy) if args.compile else langevin_policy
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
        # Options not given are the checkpoint's, --compile included (not its --resume, nor, to evaluate, its
        # --track, --capture-video and --bf16-chain)
        if checkpoint:
            saved = checkpoint["args"] | {"resume": None, "eval_checkpoint": None}
            if args.eval_checkpoint:
                saved |= {"track": False, "capture_video": False, "bf16_chain": False}
            args = tyro.cli(Args, args=argv, default=Args(**saved))
        run = evaluate_checkpoint if args.eval_checkpoint else train
        return run(args, checkpoint)["exit_code"]
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
