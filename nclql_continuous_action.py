# Noise-Conditioned Langevin Q-Learning (NC-LQL), single file, CleanRL style.
# Paper: "Direct Soft-Policy Sampling via Langevin Dynamics", Ki, Ahn, Kim, Lee, arXiv 2602.07873.
# There is no actor network: the policy is pi(a|s) ~ exp(w Q(s,a)), sampled by annealed Langevin dynamics
# on a critic conditioned on a noise level. Defaults follow the authors' JAX code (ku-dmlab/NCLQL).
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
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, cuda will be used when available"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases (needs `pip install wandb`)"""
    wandb_project_name: str = "nclql"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project"""
    capture_video: bool = False
    """whether to record videos of evaluation episodes to `videos/` (needs `pip install moviepy`)"""
    save_model: bool = True
    """whether to save a checkpoint to `runs/{run_name}` at each evaluation, at the end and on Ctrl-C"""
    save_buffer: bool = False
    """also save the replay buffer's filled part in each checkpoint, so that --resume continues learning where it
    stopped: 4 bytes per float, (2 obs_dim + act_dim + 2) floats per transition (Hopper-v4: 27, 108 MB at 1M;
    Humanoid-v4: about 770, 3 GB at 1M)"""
    resume: str | None = None
    """continue the run saved in this checkpoint (of this script) in its runs/ folder; options not given on the command
    line are the checkpoint's, and only the run's length, evaluation, logging and speed options may differ"""
    eval_checkpoint: str | None = None
    """evaluate this checkpoint's critic for --eval-episodes episodes and exit, training nothing (the sampler's
    --num-particles, --w, --steps-per-level and --q-grad-norm may differ from the run's)"""
    compile: bool = False
    """fast path: torch.compile the Langevin chain (same actions within 1e-5; each batch shape compiles once, ~1 min)"""
    bf16_chain: bool = False
    """fast path: draw the TD target's a' on a bfloat16 copy of the critic (needs bf16 matmul: a CPU with AVX512-BF16
    or AMX, or a CUDA GPU); acting, evaluation and both Adam steps stay float32"""

    # Environment and protocol
    env_id: str = "Hopper-v4"
    """the id of the environment (a gymnasium id with a Box action space)"""
    total_timesteps: int = 5_000_000
    """env steps AFTER the warm-up (the authors' total_step); tensorboard's x-axis counts all env steps, warm-up too.
    As in the authors' loop (while steps <= total): learning_starts + total_timesteps + num_envs env steps in all,
    total_timesteps / num_envs + 1 updates. Defaults: 5,030,005 env steps, 1,000,001 updates."""
    num_envs: int = 5
    """the number of parallel environments; one update is made per vector step"""
    buffer_size: int = 1_000_000
    """the replay memory buffer size"""
    batch_size: int = 256
    """the batch size of sample from the replay memory"""
    learning_starts: int = 30_000
    """env steps of uniform-random actions before learning starts (whole vector steps), not in --total-timesteps"""
    eval_frequency: int = 125_000
    """evaluate every this many env steps after the warm-up, and on reaching --total-timesteps if off this schedule.
    At the defaults: the authors' 40 evaluations, after 25,000, 50,000, ..., 1,000,000 updates."""
    eval_episodes: int = 20
    """the number of evaluation episodes (run in parallel, one per evaluation env)"""
    eval_seed: int = 0
    """evaluation env i is seeded eval_seed + i in every run, whatever --seed (the authors evaluate on seed 0)"""
    log_interval_s: float = 10.0
    """seconds between progress lines on the console"""

    # Critic learning
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 0.005
    """target smoothing coefficient (Polyak)"""
    learning_rate: float = 1e-4
    """the learning rate of the Adam optimizer of the critics"""
    reward_scale: float = 0.2
    """rewards are multiplied by this before the TD target"""

    # Annealed Langevin sampler
    num_levels: int = 10
    """L: the number of noise levels; level L-1 is the clean critic"""
    steps_per_level: int = 2
    """T: Langevin steps at each noise level (L * T gradient steps per action)"""
    sigma_max: float = 0.1
    """smoothing width of the smoothest level (level 0)"""
    sigma_min: float = 0.001
    """smoothing width of the sharpest level (level L-1)"""
    step_lr: float = 1e-4
    """base step size: level l uses alpha_l = step_lr * (sigma_l / sigma_min)^2"""
    w: float = 500.0
    """inverse temperature of the soft policy pi(a|s) ~ exp(w Q(s,a))"""
    q_grad_norm: bool = True
    """normalise grad_a Q to unit length per sample (the authors' default; off = exact Boltzmann chain)"""
    num_particles: int = 1
    """N chains per state; the action with the highest min(Q1, Q2) at the clean level is kept"""


class UsageError(ValueError):
    """Bad input from the user: reported as one line on stderr, exit code 2, nothing written."""


def training_device(args: Args) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")


def validate_args(args: Args) -> None:
    """Reject impossible hyperparameters before anything is created."""
    # First: every comparison with nan is False and inf passes "> 0", so the checks below would let them through.
    for field in dataclasses.fields(args):
        value = getattr(args, field.name)
        if field.type is float and not math.isfinite(value):
            raise UsageError(f"--{field.name.replace('_', '-')} is not a finite number: {value}")
    positive = ["total_timesteps", "num_envs", "buffer_size", "batch_size", "eval_frequency", "eval_episodes",
                "steps_per_level", "num_particles", "learning_rate", "sigma_min", "step_lr", "log_interval_s"]
    for name in positive:
        if not getattr(args, name) > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not args.w > 0:
        raise UsageError(f"--w must be positive (the policy is exp(w Q): w <= 0 ignores or minimises Q), got {args.w}")
    for name in ["learning_starts", "seed", "eval_seed"]:  # gymnasium refuses negative seeds
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.num_levels < 2:
        raise UsageError(f"--num-levels must be >= 2 (one clean level and at least one smoothed), "
                         f"got {args.num_levels}")
    if not args.sigma_min < args.sigma_max:
        raise UsageError(f"--sigma-min ({args.sigma_min}) must be smaller than --sigma-max ({args.sigma_max})")
    if args.batch_size > args.buffer_size:
        raise UsageError(f"--batch-size ({args.batch_size}) cannot exceed --buffer-size ({args.buffer_size})")
    if not 0.0 <= args.gamma <= 1.0 or not 0.0 < args.tau <= 1.0:
        raise UsageError(f"need 0 <= --gamma <= 1 and 0 < --tau <= 1, got gamma={args.gamma}, tau={args.tau}")
    if args.resume and args.eval_checkpoint:
        raise UsageError("--resume and --eval-checkpoint exclude each other: give one")
    if args.track and importlib.util.find_spec("wandb") is None:
        raise UsageError("--track needs Weights & Biases: `pip install wandb`, or drop --track")
    if args.capture_video and importlib.util.find_spec("moviepy") is None:
        raise UsageError("--capture-video needs moviepy: `pip install moviepy`, or drop --capture-video")
    # On CPU, inductor builds --compile's kernels with g++; without it the run would fail at its first update, after
    # the whole warm-up.
    on_cpu = training_device(args).type == "cpu"
    if args.bf16_chain and not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
                                if on_cpu else torch.cuda.is_bf16_supported()):
        raise UsageError("--bf16-chain needs bf16 matmul in hardware (CPU flags avx512_bf16 or amx_bf16, or a CUDA GPU "
                         "with bf16), which this machine lacks: drop --bf16-chain")
    if args.compile and on_cpu and sys.platform != "win32" and shutil.which("g++") is None:
        raise UsageError("--compile on CPU needs a C++ compiler and g++ is not on PATH: install it (e.g. `apt install "
                         "g++`), or drop --compile")


# ENVIRONMENT
def make_env(env_id: str, seed: int, idx: int, capture_video: bool, run_name: str):
    """Return a thunk making one env: episode statistics recorded, actions in [-1, 1] rescaled to its bounds."""

    def thunk():
        if capture_video and idx == 0:
            env = gym.make(env_id, render_mode="rgb_array")
            env = gym.wrappers.RecordVideo(env, f"videos/{run_name}", episode_trigger=lambda episode: True)
        else:
            env = gym.make(env_id)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        # The sampler lives in [-1, 1]^act_dim; e.g. Humanoid's true bounds are +-0.4.
        unit = np.ones(env.action_space.shape, dtype=np.float32)
        env = gym.wrappers.RescaleAction(env, min_action=-unit, max_action=unit)
        env.action_space.seed(seed)
        return env

    return thunk


def check_env(env_id: str) -> tuple[int, int]:
    """Make the env once and check that this method applies to it; return (obs_dim, act_dim)."""
    try:
        env = gym.make(env_id)
    except (gym.error.Error, ImportError) as e:
        raise UsageError(f"cannot make env {env_id!r}: {e} (list the ids with `python -c \"import gymnasium; "
                         f"gymnasium.pprint_registry()\"`)") from None
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    if not isinstance(act_space, gym.spaces.Box):
        raise UsageError(f"{env_id} has a {type(act_space).__name__} action space; Langevin sampling needs a "
                         f"continuous Box action space (e.g. Hopper-v4)")
    if not (np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high))):
        raise UsageError(f"{env_id} has unbounded action bounds {act_space.low}..{act_space.high}; "
                         f"the sampler needs finite bounds to rescale [-1, 1] onto")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise UsageError(f"{env_id} has observations {obs_space}; this script needs flat vector observations "
                         f"(wrap the env with gymnasium.wrappers.FlattenObservation)")
    return obs_space.shape[0], act_space.shape[0]


# NETWORKS
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
        # x: (num_members, batch, in_features) -> (num_members, batch, out_features)
        return torch.baddbmm(self.bias, x, self.weight)


def sinusoidal_encoding(levels: torch.Tensor, dim: int = 16) -> torch.Tensor:
    """Transformer-style encoding of integer noise levels, scaled by 1/sqrt(dim) as in the authors' code."""
    half = dim // 2
    inv_freq = 10000.0 ** (-torch.arange(half, device=levels.device) / half)
    angles = levels.float()[:, None] * inv_freq
    return torch.cat([angles.sin(), angles.cos()], dim=-1) / math.sqrt(dim)


class NoiseConditionedTwinCritic(nn.Module):
    """Q1(s, a, l) and Q2(s, a, l): level l sees Q through Gaussian action noise of width sigma_l.

    Each critic: concat(obs, action, level embedding) -> 3 x 256 mish -> scalar.
    Level embedding: sinusoid(l, 16) -> Linear(16, 32) -> mish -> Linear(32, 16), one per critic.

    fc1 is linear, so on the concatenated input it is a sum of three terms, one per part:
        fc1([s, a, e_l]) = (W_s s + b) + W_e e_l + W_a a
    The Langevin chain moves only a: it computes W_s s + b and every level's W_e e_l once per call (their sum is a
    step's "context") and each step adds W_a a (see sample_actions). forward() computes the same sum in one go.
    """

    def __init__(self, obs_dim: int, act_dim: int, num_levels: int, hidden_dim: int = 256, level_dim: int = 16,
                 activation=F.mish):
        super().__init__()
        self.activation = activation
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.num_levels = num_levels
        self.level_dim = level_dim
        self.level_embed1 = EnsembleLinear(2, level_dim, 2 * level_dim)
        self.level_embed2 = EnsembleLinear(2, 2 * level_dim, level_dim)
        # fc1's input rows are [obs | action | level embedding]: its weight's row blocks are W_s, W_a and W_e.
        self.fc1 = EnsembleLinear(2, obs_dim + act_dim + level_dim, hidden_dim)
        self.fc2 = EnsembleLinear(2, hidden_dim, hidden_dim)
        self.fc3 = EnsembleLinear(2, hidden_dim, hidden_dim)
        self.fc_out = EnsembleLinear(2, hidden_dim, 1)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """obs (batch, obs_dim), actions (batch, act_dim), level (batch,) long -> (2, batch): Q1 and Q2."""
        context = self.obs_term(obs) + self.level_terms()[:, level]
        return self.q_from_context(context, actions)

    def obs_term(self, obs: torch.Tensor) -> torch.Tensor:
        """W_s s + b, fc1's term in the state (with fc1's bias): (2, batch, hidden)."""
        w_obs = self.fc1.weight[:, : self.obs_dim]
        return torch.baddbmm(self.fc1.bias, obs.to(w_obs.dtype).expand(2, -1, -1), w_obs)  # .to: see bf16_copy

    def level_terms(self) -> torch.Tensor:
        """W_e e_l for each level l = 0..L-1, fc1's term in the level embedding: (2, L, hidden)."""
        # Only L levels exist: embed all L once per call (L rows, whatever the batch); samples look theirs up.
        all_levels = torch.arange(self.num_levels, device=self.fc1.weight.device)
        embeddings = sinusoidal_encoding(all_levels, self.level_dim).to(self.fc1.weight.dtype).expand(2, -1, -1)
        embeddings = self.level_embed2(self.activation(self.level_embed1(embeddings)))  # (2, L, level_dim)
        w_level = self.fc1.weight[:, self.obs_dim + self.act_dim :]
        return torch.bmm(embeddings, w_level)

    def q_from_context(self, context: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q1 and Q2 (2, batch) given fc1's action-free terms, context = W_s s + b + W_e e_l (2, batch, hidden)."""
        w_act = self.fc1.weight[:, self.obs_dim : self.obs_dim + self.act_dim]
        x = self.activation(torch.baddbmm(context, actions.to(w_act.dtype).expand(2, -1, -1), w_act))  # + W_a a
        x = self.activation(self.fc2(x))
        x = self.activation(self.fc3(x))
        return self.fc_out(x).squeeze(-1)


# LANGEVIN SAMPLER
def sigma_schedule(sigma_max: float, sigma_min: float, num_levels: int) -> torch.Tensor:
    """sigma_l, l = 0..L-1: geometric from sigma_max (smoothest, l=0) to sigma_min (clean, l=L-1)."""
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), num_levels))


def annealed_langevin_sample(q_fn, batch_size: int, act_dim: int, sigmas: torch.Tensor, steps_per_level: int,
                             step_lr: float, w: float, grad_norm: bool = True) -> torch.Tensor:
    """Draw a ~ pi(a|s) ~ exp(w Q(s,a)) by annealed Langevin dynamics (NCSN's sampler, applied to Q).

        a ~ U[-1, 1]^act_dim
        for l = 0..L-1:   alpha_l = step_lr * (sigma_l / sigma_{L-1})^2
            T times:      a <- clip(a + (alpha_l / 2) * w * grad_a q_fn(a, l) + sqrt(alpha_l) * z, -1, 1)

    `q_fn(actions, level)` returns a (batch,) tensor: Q at noise level `level` (an int) at the batch's fixed states
    (in training Q1 + Q2). Since grad_a log pi = w grad_a Q, this is Langevin dynamics on log pi. With grad_norm,
    grad_a Q is scaled to unit length per sample: the step keeps the direction and drops the size, so the chain no
    longer targets exp(w Q) exactly. Returns (batch, act_dim) actions in [-1, 1], on sigmas' device.
    """
    # Step sizes stay tensors (no .item()), so that torch.compile can trace the whole chain as one graph.
    step_sizes = step_lr * (sigmas / sigmas[-1]) ** 2  # alpha_l: 1.0 at level 0 down to step_lr at L-1
    actions = torch.rand(batch_size, act_dim, device=sigmas.device) * 2 - 1
    for level, step_size in enumerate(step_sizes):
        for _ in range(steps_per_level):
            with torch.enable_grad():
                actions.requires_grad_(True)
                # Only grad w.r.t. the actions: the critics' weights are constants inside the chain.
                (grad,) = torch.autograd.grad(q_fn(actions, level).sum(), actions)
            if grad_norm:
                grad = grad / (grad.norm(dim=-1, keepdim=True) + 1e-8)
            noise = torch.randn_like(actions)
            actions = (actions.detach() + 0.5 * step_size * w * grad + step_size.sqrt() * noise).clamp(-1.0, 1.0)
    return actions


def sample_actions(critic: NoiseConditionedTwinCritic, obs: torch.Tensor, act_dim: int, sigmas: torch.Tensor,
                   args: Args) -> torch.Tensor:
    """The policy: annealed Langevin on Q1 + Q2; with N particles, keep the best by min(Q1, Q2) at the clean level."""
    n, batch_size = args.num_particles, obs.shape[0]
    obs_n = obs.repeat(n, 1)  # particle k of state i sits at row k * batch + i
    # The chain moves only the actions, so fc1's state and level terms are computed once here, not at each of the
    # L * T steps (see NoiseConditionedTwinCritic). Side by side (2-core CPU, Hopper, batch 256): update 6-7% faster
    # eager, 3% with --compile.
    obs_term, level_terms = critic.obs_term(obs_n), critic.level_terms()

    def q_fn(a, level):  # the whole batch is at one level: its term (2, 1, hidden) broadcasts over the batch
        return critic.q_from_context(obs_term + level_terms[:, level, None], a).sum(0)

    actions = annealed_langevin_sample(q_fn, n * batch_size, act_dim, sigmas, args.steps_per_level, args.step_lr,
                                       args.w, args.q_grad_norm)
    if n == 1:
        return actions
    with torch.no_grad():
        clean_level = torch.full((n * batch_size,), len(sigmas) - 1, dtype=torch.long, device=obs.device)
        q_min = critic(obs_n, actions, clean_level).min(0).values.view(n, batch_size)
        best = q_min.argmax(0)  # (batch,)
    return actions.view(n, batch_size, act_dim)[best, torch.arange(batch_size, device=obs.device)]


# REPLAY BUFFER
class ReplayBuffer:
    """Preallocated ring buffer of (obs, action, reward, next_obs, terminated) on the training device.

    `terminated` (a true terminal state) stops bootstrapping; a time-limit truncation does not, so it is not
    stored: the transition keeps its true final observation as next_obs and bootstraps through it.
    """

    FIELDS = ("obs", "next_obs", "actions", "rewards", "terminated")

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device):
        self.capacity, self.device = capacity, device
        self.obs = torch.zeros(capacity, obs_dim, device=device)
        self.next_obs = torch.zeros(capacity, obs_dim, device=device)
        self.actions = torch.zeros(capacity, act_dim, device=device)
        self.rewards = torch.zeros(capacity, device=device)
        self.terminated = torch.zeros(capacity, device=device)
        self.pos, self.size = 0, 0

    def add(self, obs, next_obs, actions, rewards, terminated) -> None:
        """Add a batch of transitions (numpy arrays with a leading num_envs axis)."""
        n = len(obs)
        idx = torch.arange(self.pos, self.pos + n) % self.capacity
        for store, value in ((self.obs, obs), (self.next_obs, next_obs), (self.actions, actions),
                             (self.rewards, rewards), (self.terminated, terminated)):
            store[idx] = torch.as_tensor(np.asarray(value, dtype=np.float32), device=self.device)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int):
        idx = torch.randint(0, self.size, (batch_size,), device=self.device)
        return self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx], self.terminated[idx]

    def state_dict(self) -> dict:
        """The filled part only, on the CPU (for --save-buffer)."""
        state = {name: getattr(self, name)[: self.size].cpu() for name in self.FIELDS}
        return state | {"pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        for name in self.FIELDS:
            getattr(self, name)[: state["size"]] = state[name].to(self.device)
        self.pos, self.size = state["pos"], state["size"]


# UPDATE
def update_critic(batch, critic, critic_target, optimizer, sigmas: torch.Tensor, args: Args,
                  sample_fn=sample_actions, chain_critic=None) -> dict:
    """One NC-LQL update: TD step, then smoothing step, then Polyak, in the authors' order.

    The fast path passes `sample_fn`, the compiled twin of `sample_actions` (--compile), and `chain_critic`, a bf16
    copy of `critic` that draws a' and follows `critic` after each update (--bf16-chain).
    Returns detached scalar tensors (no host sync here): td_loss, smoothing_loss, q.
    """
    obs, actions, rewards, next_obs, terminated = batch
    batch_size, act_dim = actions.shape
    num_levels = len(sigmas)
    clean_level = torch.full((batch_size,), num_levels - 1, dtype=torch.long, device=obs.device)

    # TD TARGET: y = r_scale * r + gamma * (1 - terminated) * min_i Q_i_targ(s', a', L-1), a' ~ pi(.|s') drawn
    # with the ONLINE critics (the policy is the online critic), valued by the Polyak targets.
    with torch.no_grad():
        next_actions = sample_fn(critic if chain_critic is None else chain_critic, next_obs, act_dim, sigmas, args)
        next_q = critic_target(next_obs, next_actions, clean_level).min(0).values
        td_target = args.reward_scale * rewards + args.gamma * (1.0 - terminated) * next_q

    # TD STEP on the clean level L-1. Each critic's loss is its own MSE; their sum gives each its own gradient.
    q = critic(obs, actions, clean_level)  # (2, batch)
    td_loss = ((q - td_target) ** 2).mean(1)
    optimizer.zero_grad()
    td_loss.sum().backward()
    optimizer.step()

    # SMOOTHING STEP: level l < L-1 regresses onto the clean Q at a + sigma_l * noise, so Q(s, ., l) becomes the
    # clean Q convolved with N(0, sigma_l^2). Its target mean(Q1, Q2)(s, a, L-1) is taken from BEFORE the TD
    # step (as the authors do); the noisy action is not clipped.
    smoothing_target = q.detach().mean(0)
    levels = torch.randint(0, num_levels - 1, (batch_size,), device=obs.device)
    noisy_actions = actions + sigmas[levels, None] * torch.randn_like(actions)
    smoothing_loss = ((critic(obs, noisy_actions, levels) - smoothing_target) ** 2).mean(1)
    optimizer.zero_grad()
    smoothing_loss.sum().backward()
    optimizer.step()

    # POLYAK: targ <- tau * online + (1 - tau) * targ
    with torch.no_grad():
        for p_targ, p in zip(critic_target.parameters(), critic.parameters()):
            p_targ.lerp_(p, args.tau)
        if chain_critic is not None:
            for p_chain, p in zip(chain_critic.parameters(), critic.parameters()):
                p_chain.copy_(p)

    return {"td_loss": td_loss.detach().mean(), "smoothing_loss": smoothing_loss.detach().mean(),
            "q": smoothing_target.mean()}


# FAST PATH (--compile)
def mish_one_exp(x: torch.Tensor) -> torch.Tensor:
    """mish(x) = x tanh(softplus(x)) with a single exp: tanh(log(1 + e^x)) = n / (n + 2), n = e^x (e^x + 2).

    Equal to F.mish within 4e-7 (relative). Inductor lowers F.mish to exp + log1p + tanh, in the forward and again
    in the backward; with this form the compiled chain ran 1.7x faster (2-core CPU, Hopper, batch 256). Eager, it
    is no faster than ATen's fused F.mish and 1.5x slower on 5 states, so the eager path keeps F.mish.
    """
    e = torch.exp(x.clamp(max=20.0))  # beyond 20, mish(x) = x in float32
    n = e * (e + 2)
    return x * n / (n + 2)


def compile_sampler(sample_fn):
    """torch.compile the whole Langevin chain, torch.autograd.grad included, as one graph per batch shape.

    Measured by tests/bench_speed.py on the 2-core CPU (Hopper, batch 256, with compile_critics): update 47-57 ms
    vs 92 eager, acting on 5 states 2.8-4.0 ms vs 11; actions equal to eager within 3e-6 for the same seed. Each
    batch shape (update, acting, evaluation) compiles once, ~1 min on first use.
    """
    torch._dynamo.config.trace_autograd_ops = True  # trace torch.autograd.grad instead of breaking the graph there
    torch._inductor.config.fallback_random = True  # compiled rand/randn draw what eager draws: same seed, same actions
    return torch.compile(sample_fn, dynamic=False)


def compile_critics(*critics: nn.Module) -> None:
    """torch.compile each critic's forward in place (its backward follows), for the TD and smoothing steps and the
    target's value of a'; inside the chain the critic is part of compile_sampler's graph. Side by side on the 2-core
    CPU (Hopper, batch 256, sampler compiled in both): update 8% faster. State-dict keys are unchanged."""
    for critic in critics:
        critic.compile(dynamic=False)


def bf16_copy(critic: nn.Module) -> nn.Module:
    """A bfloat16 copy of the critic for the chain that draws the TD target's a' (--bf16-chain); the critic casts its
    inputs to its weights' dtype, so the chain's actions and their normalised gradient stay float32.

    The chain needs only the direction of grad_a Q (normalised per sample by default) and adds noise of its own at
    every step, so bf16's ~3 significant digits barely move its samples (README: Speed); Q's value, which reaches
    tens, enters no loss. Acting and evaluation (5 and 20 states) stay float32: at so few rows bf16 was slower.
    """
    return copy.deepcopy(critic).to(torch.bfloat16).requires_grad_(False)


# EVALUATION
def evaluate(eval_envs: gym.vector.VectorEnv, act_fn, device: torch.device, seed: int) -> np.ndarray:
    """Run one episode in each copy of `eval_envs` with the stochastic sampler; return the episodic returns.

    The envs and the sampler's noise start from `seed` at every call, so an evaluation depends on the critic alone
    (the authors' evaluator also draws from a key made from its inputs) and --eval-checkpoint repeats it exactly.
    """
    with torch.random.fork_rng():  # training's random stream continues as if no evaluation had run
        torch.manual_seed(seed)
        obs, _ = eval_envs.reset(seed=seed)
        returns, finished = np.zeros(eval_envs.num_envs), np.zeros(eval_envs.num_envs, dtype=bool)
        while not finished.all():
            actions = act_fn(torch.as_tensor(obs, dtype=torch.float32, device=device))
            obs, _, _, _, infos = eval_envs.step(actions.cpu().numpy())
            if "episode" in infos.get("final_info", {}):
                # A copy that finished keeps running (autoreset); only its first episode counts.
                first_finish = infos["final_info"]["_episode"] & ~finished
                returns[first_finish] = infos["final_info"]["episode"]["r"][first_finish]
                finished |= first_finish
    return returns


def make_vector_env(env_id: str, num_envs: int, seed: int, capture_video: bool, run_name: str) -> gym.vector.VectorEnv:
    # SAME_STEP autoreset: a finished env reports its true last observation in infos["final_obs"] and is reset in
    # the same step, so every stored transition is real (gymnasium 1.x's default, NEXT_STEP, hides it).
    return gym.vector.SyncVectorEnv([make_env(env_id, seed + i, i, capture_video, run_name) for i in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def real_next_obs(next_obs: np.ndarray, infos: dict) -> np.ndarray:
    """The observation each transition really ended in: the final one for envs that just finished."""
    real = next_obs.copy()
    if "final_obs" in infos:
        for i in np.flatnonzero(infos["_final_obs"]):
            real[i] = infos["final_obs"][i]
    return real


# CHECKPOINTS
# What may differ from the checkpoint's options when a run is resumed; every other option defines the method or a
# shape. An evaluated checkpoint must match only in NETWORK_OPTIONS, the critic's shapes and what its levels mean.
RESUME_MAY_CHANGE = ("resume", "eval_checkpoint", "total_timesteps", "eval_frequency", "eval_episodes", "eval_seed",
                     "log_interval_s", "save_model", "save_buffer", "track", "wandb_project_name", "wandb_entity",
                     "capture_video", "compile", "bf16_chain", "cuda", "torch_deterministic")
NETWORK_OPTIONS = ("env_id", "num_levels", "sigma_max", "sigma_min")


def save_checkpoint(path: str, state: dict) -> None:
    """Write to a temporary name, then rename: a kill during the save never truncates the last good checkpoint."""
    torch.save(state, f"{path}.tmp")
    os.replace(f"{path}.tmp", path)


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint written by this script, or raise a UsageError that says what is wrong with the file."""
    if not os.path.isfile(path):
        raise UsageError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file or another format: torch raises several kinds
        raise UsageError(f"{path} is not a readable checkpoint ({type(e).__name__}: truncated, or not from "
                         f"torch.save)") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("algorithm") != "nclql":
        found = checkpoint.get("algorithm", "no algorithm named") if isinstance(checkpoint, dict) else "no dict"
        raise UsageError(f"{path} is not a checkpoint of {os.path.basename(__file__)} (it holds {found})")
    if set(checkpoint["args"]) != {field.name for field in dataclasses.fields(Args)}:
        raise UsageError(f"{path} was written by another version of {os.path.basename(__file__)} (other options)")
    return checkpoint


def check_same_options(args: Args, saved: dict, must_match) -> None:
    """Refuse to resume (or evaluate) a checkpoint with options that change what it learned."""
    for name in must_match:
        if getattr(args, name) != saved[name]:
            raise UsageError(f"--{name.replace('_', '-')} is {getattr(args, name)} here but {saved[name]} in the "
                             f"checkpoint; it cannot change: drop it or start a new run")


def train(args: Args) -> dict:
    """Run NC-LQL as configured (or resume a run); return a summary (eval returns, checkpoint path, exit code)."""
    from torch.utils.tensorboard import SummaryWriter  # imported here: it is slow and only training needs it

    validate_args(args)
    obs_dim, act_dim = check_env(args.env_id)
    checkpoint = None
    if args.resume:  # everything is checked before anything is written
        checkpoint = load_checkpoint(args.resume)
        check_same_options(args, checkpoint["args"], [name for name in checkpoint["args"] if name not in
                                                      RESUME_MAY_CHANGE])
    # A resumed run writes on into its own folder; TensorBoard drops what the stopped run logged after its checkpoint.
    run_dir = os.path.dirname(os.path.abspath(args.resume)) if args.resume else \
        f"runs/{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_name = os.path.basename(run_dir)
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args), name=run_name, save_code=True)
    writer = SummaryWriter(run_dir, purge_step=checkpoint["global_step"] + 1 if checkpoint else None)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % "\n".join(
        f"|{key}|{value}|" for key, value in vars(args).items()))

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = training_device(args)

    envs = make_vector_env(args.env_id, args.num_envs, args.seed, False, run_name)
    video_folder = f"{run_name}/eval" + (f"_from_{checkpoint['global_step']}" if checkpoint else "")  # no overwrites
    eval_envs = make_vector_env(args.env_id, args.eval_episodes, args.eval_seed, args.capture_video, video_folder)

    activation = mish_one_exp if args.compile else F.mish
    critic = NoiseConditionedTwinCritic(obs_dim, act_dim, args.num_levels, activation=activation).to(device)
    critic_target = NoiseConditionedTwinCritic(obs_dim, act_dim, args.num_levels, activation=activation).to(device)
    critic_target.load_state_dict(critic.state_dict())
    critic_target.requires_grad_(False)
    # fused: Adam's whole step as one kernel (0.2 ms instead of 0.65 for the critic's parameters, on CPU)
    optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate, fused=True)
    sigmas = sigma_schedule(args.sigma_max, args.sigma_min, args.num_levels).to(device)
    rb = ReplayBuffer(args.buffer_size, obs_dim, act_dim, device)

    # Steps counted as the authors' loop counts them: learning_starts uniform-random env steps, then one update per
    # vector step while learning_step (env steps after the warm-up) <= total_timesteps; their `<=` adds the `+ 1`.
    warmup_iterations = math.ceil(args.learning_starts / args.num_envs)
    num_iterations = warmup_iterations + args.total_timesteps // args.num_envs + 1
    total_env_steps = num_iterations * args.num_envs
    global_step, learning_step, num_updates, last_eval_step, eval_returns = 0, 0, 0, 0, []
    if checkpoint:
        critic.load_state_dict(checkpoint["critic"])
        critic_target.load_state_dict(checkpoint["critic_target"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        global_step, learning_step, num_updates, last_eval_step = (checkpoint[key] for key in (
            "global_step", "learning_step", "num_updates", "last_eval_step"))
        eval_returns = checkpoint["eval_returns"]
        torch.set_rng_state(checkpoint["rng"]["torch"])
        envs.action_space.np_random.bit_generator.state = checkpoint["rng"]["action_space"]
        if device.type == "cuda" and checkpoint["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
        if checkpoint["replay_buffer"]:
            rb.load_state_dict(checkpoint["replay_buffer"])
    chain_critic = bf16_copy(critic) if args.bf16_chain else None  # a copy: made before compile_critics

    sample_fn = sample_actions
    if args.compile:
        sample_fn = compile_sampler(sample_actions)
        compile_critics(critic, critic_target)
    update_fn = functools.partial(update_critic, sample_fn=sample_fn, chain_critic=chain_critic)

    def act_fn(obs):
        with torch.no_grad():  # as inside update_critic, so that acting and the update share one compiled graph mode
            return sample_fn(critic, obs, act_dim, sigmas, args)

    checkpoint_path = f"{run_dir}/checkpoint.pt"
    summary = {"run_dir": run_dir, "eval_returns": eval_returns, "checkpoint": None, "exit_code": 0}

    def save(path=checkpoint_path):
        if args.save_model:
            save_checkpoint(path, {
                "algorithm": "nclql", "args": dataclasses.asdict(args), "critic": critic.state_dict(),
                "critic_target": critic_target.state_dict(), "optimizer": optimizer.state_dict(),
                "global_step": global_step, "learning_step": learning_step, "num_updates": num_updates,
                "last_eval_step": last_eval_step, "eval_returns": eval_returns,
                "rng": {"torch": torch.get_rng_state(), "action_space": envs.action_space.np_random.bit_generator.state,
                        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None},
                "replay_buffer": rb.state_dict() if args.save_buffer else None})
            if path == checkpoint_path:
                summary["checkpoint"] = path

    def run_evaluation():
        nonlocal last_eval_step
        returns = evaluate(eval_envs, act_fn, device, args.eval_seed)
        last_eval_step = learning_step  # only once it has run: a run stopped during it evaluates again on resume
        writer.add_scalar("eval/episodic_return", returns.mean(), global_step)
        eval_returns.append((global_step, float(returns.mean())))
        print(f"eval   step {global_step:>9,}: return {returns.mean():8.1f} +- {returns.std():6.1f} "
              f"over {len(returns)} episodes, after {num_updates:,} updates", flush=True)
        save()

    def stop_like_ctrl_c(signum, frame):
        raise KeyboardInterrupt

    # `kill` (SIGTERM) stops the run like Ctrl-C does: with a checkpoint of what it has learned.
    previous_sigterm_handler = signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    # A resumed run starts fresh episodes (the simulators' state is not saved). Without its replay buffer it first
    # collects as many transitions with the policy as its warm-up had, without updates and without counting them.
    start_iteration = global_step // args.num_envs
    refill_iterations = min(start_iteration, warmup_iterations) \
        if checkpoint and rb.size == 0 and start_iteration < num_iterations else 0
    if checkpoint:
        print(f"resumed {args.resume} at env step {global_step:,} ({num_updates:,} updates)" + (
            f"; no replay buffer saved: refilling {refill_iterations * args.num_envs:,} transitions with the policy "
            f"first" if refill_iterations else ""), flush=True)
    recent_returns, start_time, start_step = [], time.time(), global_step
    last_log_time, last_log_step = start_time, global_step
    obs, _ = envs.reset(seed=args.seed + global_step)
    try:
        for iteration in range(start_iteration - refill_iterations, num_iterations):
            refill = iteration < start_iteration
            warmup = iteration < warmup_iterations and not refill
            # SELECT ACTION: uniform random during warm-up, then the Langevin policy
            if warmup:
                actions = envs.action_space.sample()
            else:
                actions = act_fn(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()

            # STEP ENV
            next_obs, rewards, terminations, truncations, infos = envs.step(actions)
            global_step += 0 if refill else args.num_envs
            if "episode" in infos.get("final_info", {}) and not refill:
                for i in np.flatnonzero(infos["final_info"]["_episode"]):
                    episode = infos["final_info"]["episode"]
                    recent_returns.append(float(episode["r"][i]))
                    writer.add_scalar("charts/episodic_return", episode["r"][i], global_step)
                    writer.add_scalar("charts/episodic_length", episode["l"][i], global_step)

            # STORE: truncated transitions keep their true final obs and are bootstrapped; only `terminations`
            # stops bootstrapping. With SAME_STEP autoreset no transition spans a reset.
            rb.add(obs, real_next_obs(next_obs, infos), actions, rewards, terminations)
            obs = next_obs

            # UPDATE: one per vector step once the warm-up is done
            if not warmup and not refill:
                learning_step += args.num_envs
                metrics = update_fn(rb.sample(args.batch_size), critic, critic_target, optimizer, sigmas, args)
                num_updates += 1
                if num_updates % 100 == 1:  # .item() syncs the GPU: read the metrics only now and then
                    values = {key: value.item() for key, value in metrics.items()}
                    if not all(math.isfinite(v) for v in values.values()):
                        save(f"{run_dir}/checkpoint_nonfinite.pt")
                        print(f"error: non-finite loss at step {global_step:,} ({values}); stopped. Last good "
                              f"checkpoint: {summary['checkpoint'] or 'none saved yet'}", file=sys.stderr)
                        summary["exit_code"] = 1
                        break
                    writer.add_scalar("losses/td_loss", values["td_loss"], global_step)
                    writer.add_scalar("losses/smoothing_loss", values["smoothing_loss"], global_step)
                    writer.add_scalar("values/q", values["q"], global_step)
                    sps = (global_step - start_step) / (time.time() - start_time)
                    writer.add_scalar("charts/SPS", int(sps), global_step)

            # EVALUATE: every eval_frequency learning steps since the last evaluation (the authors' Interval, none at
            # learning step 0), and once on reaching total_timesteps if the schedule has no evaluation there
            if (learning_step - last_eval_step >= args.eval_frequency
                    or last_eval_step < args.total_timesteps <= learning_step):
                run_evaluation()

            # PROGRESS LINE
            now = time.time()
            if now - last_log_time >= args.log_interval_s:
                sps = (global_step - last_log_step) / (now - last_log_time)
                eta = (total_env_steps - global_step) / sps if sps > 0 else 0.0
                last_return = f"{np.mean(recent_returns[-10:]):.1f}" if recent_returns else "n/a"
                print(f"step {global_step:>9,}/{total_env_steps:,} | SPS {sps:6.1f} | updates {num_updates:,} | "
                      f"return (last 10) {last_return} | ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}", flush=True)
                last_log_time, last_log_step = now, global_step
        else:
            save()
    except KeyboardInterrupt:
        save()
        print(f"interrupted at step {global_step:,}; checkpoint: {summary['checkpoint'] or 'not saved'}",
              file=sys.stderr)
        summary["exit_code"] = 130
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm_handler)
        envs.close()
        eval_envs.close()
        writer.close()
    summary["num_updates"], summary["global_step"], summary["replay_buffer"] = num_updates, global_step, rb
    return summary


def evaluate_checkpoint(args: Args) -> dict:
    """--eval-checkpoint: run --eval-episodes episodes with a saved critic and print their returns; train nothing."""
    validate_args(args)
    obs_dim, act_dim = check_env(args.env_id)
    checkpoint = load_checkpoint(args.eval_checkpoint)
    check_same_options(args, checkpoint["args"], NETWORK_OPTIONS)
    device = training_device(args)
    activation = mish_one_exp if args.compile else F.mish
    critic = NoiseConditionedTwinCritic(obs_dim, act_dim, args.num_levels, activation=activation).to(device)
    critic.load_state_dict(checkpoint["critic"])
    sigmas = sigma_schedule(args.sigma_max, args.sigma_min, args.num_levels).to(device)
    sample_fn = compile_sampler(sample_actions) if args.compile else sample_actions

    def act_fn(obs):
        with torch.no_grad():
            return sample_fn(critic, obs, act_dim, sigmas, args)

    run_name = f"{os.path.basename(os.path.dirname(os.path.abspath(args.eval_checkpoint)))}/eval_checkpoint"
    eval_envs = make_vector_env(args.env_id, args.eval_episodes, args.eval_seed, args.capture_video, run_name)
    returns = evaluate(eval_envs, act_fn, device, args.eval_seed)
    eval_envs.close()
    print(f"{args.eval_checkpoint} (env step {checkpoint['global_step']:,}): return {returns.mean():.1f} +- "
          f"{returns.std():.1f}, min {returns.min():.1f}, max {returns.max():.1f} over {len(returns)} episodes")
    return {"returns": returns, "exit_code": 0}


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv)
    try:
        if args.resume or args.eval_checkpoint:
            # Options not on the command line are the checkpoint's, so `--resume PATH` alone continues the run.
            saved = load_checkpoint(args.resume or args.eval_checkpoint)["args"]
            saved |= {"resume": None, "eval_checkpoint": None}  # a resumed run's checkpoint names its own --resume
            if args.eval_checkpoint:  # evaluating needs none of the run's logging or training speed options
                saved |= {"track": False, "capture_video": False, "bf16_chain": False}
            args = tyro.cli(Args, args=argv, default=Args(**saved))
        return (evaluate_checkpoint(args) if args.eval_checkpoint else train(args))["exit_code"]
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
