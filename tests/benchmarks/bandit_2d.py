"""The 2-D multimodal bandit: does each script's policy reach every optimum of a multimodal reward?

One step, a constant dummy observation, a 2-D action a in [-1, 1]^2 and a reward with four separated optima
of equal height at (+-0.5, +-0.5):

    r(a) = sum_k h_k exp(-|a - c_k|^2 / (2 rho^2)),   rho = 0.25,  h_k = 1 (--heights to change)

A unimodal policy (a Gaussian actor) puts its mass near at most one optimum, or spreads it over the valleys
between them. The soft policy of the true critic Q = reward_scale * r puts 1/4 of its mass near each (the chains
run on Q1 + Q2, so the law they target is exp(w (Q1 + Q2)) = exp(200 r) at the defaults w = 500, reward_scale = 0.2).

Each script's critic is trained with the script's own `update_critic` on batches of uniform-random actions (an
endless warm-up buffer; gamma = 0 and terminated = 1, so the TD target is reward_scale * r), then the script's own
`langevin_policy` draws actions with its default sampler (w = 500, gradient normalised, 20 gradient steps).
Reported: the share of samples within NEAR_RADIUS of each optimum, how many optima hold at least COVERED_SHARE of
the samples, and the samples' mean reward against uniform-random actions', after 3000 updates and along the way
(a learning curve from the same run).

    python tests/benchmarks/bandit_2d.py --seed 1             # full size, ~4 min on one core; README: seeds 1, 2, 3
    python tests/benchmarks/bandit_2d.py --updates 500 --measure-at --samples 2000   # tests/test_bandit.py's size
    python tests/benchmarks/bandit_2d.py --heights 1 1 1 0.8  # unequal optima: the soft policy drops the lowest

Not collected by pytest (a measurement, not a test); tests/test_bandit.py trains at a smaller size with
`train_and_sample` and checks what every soft policy must do there.
"""
import argparse
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import lql_continuous_action as lql  # noqa: E402
import nclql_continuous_action as nclql  # noqa: E402

OPTIMA = torch.tensor([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]])
RHO = 0.25
"""width of each reward bump; neighbouring optima are 1.0 = 4 rho apart, the reward between them is 0.27"""
NEAR_RADIUS = RHO
"""a sample is 'near' optimum k if |a - c_k| < NEAR_RADIUS (there r(a) > 0.6 of the peak)"""
COVERED_SHARE = 0.05
"""an optimum is covered if at least this share of the samples is near it (its fair share is 0.25)"""
SCRIPTS = {"nclql": nclql, "lql": lql}
heights = torch.ones(len(OPTIMA))
"""h_k, the height of each optimum (main() sets it from --heights)"""


def reward(actions: torch.Tensor) -> torch.Tensor:
    """r(a) for a batch of actions (batch, 2) -> (batch,)."""
    squared_distance = ((actions[:, None, :] - OPTIMA.to(actions.dtype)) ** 2).sum(-1)
    return (heights.to(actions.dtype) * torch.exp(-squared_distance / (2 * RHO**2))).sum(-1)


def soft_policy_shares(grid_size: int = 801) -> torch.Tensor:
    """Share of the chains' target law exp(w (Q1 + Q2)), Q1 = Q2 = reward_scale * r, near each optimum (on a grid)."""
    default = nclql.Args()
    axis = torch.linspace(-1, 1, grid_size, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    probs = torch.softmax(default.w * 2 * default.reward_scale * reward(grid), 0)
    near = (grid[:, None, :] - OPTIMA.double()).norm(dim=-1) < NEAR_RADIUS
    return (probs[:, None] * near).sum(0).float()


def uniform_next_actions(critic, next_obs, args):
    """The TD target's a' while training (a policy of update_critic's): with gamma = 0 it does not enter the target,
    so no chain is run for it."""
    return torch.rand(len(next_obs), 2) * 2 - 1


UNIFORM_GRID = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 101)] * 2, indexing="ij"), -1).reshape(-1, 2)
"""a 101 x 101 grid on the box: a mean over it is the mean under uniform-random actions, without sampling noise"""


def train_and_sample(name: str, num_updates: int, num_samples: int, batch_size: int = 256,
                     learning_rate: float = 3e-3, seed: int = 1, measure_at: tuple[int, ...] = (),
                     chains: tuple[str, ...] = ("fp32",)) -> list[dict]:
    """Train script `name`'s critic on the bandit with its own update, then draw actions from its own policy.

    Returns one measurement per entry of `measure_at` (update counts) and one at the end, for each of `chains`. The
    policy is sampled under a forked RNG, so measuring along the way does not change the training run.

    The learning rate is raised from the scripts' 1e-4 so that the critic fits r in a few thousand updates. With
    gamma = 0 the next action a' drawn inside `update_critic` does not enter the TD target, so training draws it
    uniformly (`uniform_next_actions`); sampling uses the default Args, on the critic or, for chain "bf16", on a bf16
    copy of it (what --bf16-chain does for the TD target's a').
    """
    script = SCRIPTS[name]
    args = script.Args(gamma=0.0, learning_rate=learning_rate, cuda=False)
    torch.manual_seed(seed)
    critic, critic_target = script.make_critic(args, 1, 2), script.make_critic(args, 1, 2)
    critic_target.load_state_dict(critic.state_dict())
    critic_target.requires_grad_(False)
    optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate)

    def mean_q(actions):  # mean(Q1, Q2) at the clean level, the critic's estimate of reward_scale * r
        with torch.no_grad():
            return critic(torch.zeros(len(actions), 1), actions).mean(0)

    def measure(num_done: int, train_s: float, chain: str) -> dict:
        with torch.random.fork_rng(devices=[]):
            start = time.time()
            chain_critic = script.bf16_copy(critic) if chain == "bf16" else critic
            samples = script.langevin_policy(chain_critic, torch.zeros(num_samples, 1), args).detach()
            sample_s = time.time() - start
        shares = near_shares(samples)
        return {"name": name, "samples": samples, "shares": shares, "covered": int((shares >= COVERED_SHARE).sum()),
                "at_faces": float((samples.abs() > 0.99).any(-1).float().mean()),
                # the critic's own fit at the optima: tells a sampler failure from a critic failure
                "q_at_optima": mean_q(OPTIMA), "q_target": args.reward_scale * reward(OPTIMA),
                "reward": float(reward(samples).mean()), "uniform_reward": float(reward(UNIFORM_GRID).mean()),
                "q": float(mean_q(samples).mean()), "uniform_q": float(mean_q(UNIFORM_GRID).mean()),
                "max_q": float(mean_q(UNIFORM_GRID).max()),
                "train_s": train_s, "sample_s": sample_s, "num_updates": num_done, "chain": chain,
                "critic": critic}  # the critic itself: at the last measurement, the trained one

    obs, terminated = torch.zeros(batch_size, 1), torch.ones(batch_size)
    results, train_s = [], 0.0
    for num_done in range(1, num_updates + 1):
        start = time.time()
        actions = torch.rand(batch_size, 2) * 2 - 1
        script.update_critic((obs, actions, reward(actions), obs, terminated), critic, critic_target, optimizer,
                             uniform_next_actions, args)
        train_s += time.time() - start
        if num_done in measure_at or num_done == num_updates:
            results.extend(measure(num_done, train_s, chain) for chain in chains)
    return results


def near_shares(samples: torch.Tensor) -> torch.Tensor:
    """Share of the samples within NEAR_RADIUS of each optimum, (num_optima,)."""
    distance = (samples[:, None, :] - OPTIMA).norm(dim=-1)
    return (distance < NEAR_RADIUS).float().mean(0)


def text_histogram(samples: torch.Tensor, bins: int = 8) -> str:
    """Counts of samples on a bins x bins grid over [-1, 1]^2, a2 up the page, a1 across."""
    hist = torch.histogramdd(samples.float(), bins=[bins, bins], range=[-1.0, 1.0, -1.0, 1.0]).hist
    edges = torch.linspace(-1, 1, bins + 1)
    lines = [f"a2 in [{edges[j]:+.2f},{edges[j + 1]:+.2f}) " + " ".join(f"{int(hist[i, j]):5d}" for i in range(bins))
             for j in reversed(range(bins))]
    lines.append(" " * 21 + " ".join(f"{(edges[i] + edges[i + 1]) / 2:+5.2f}" for i in range(bins)) + "  <- a1")
    return "\n".join(lines)


def rounded(values: torch.Tensor) -> list[float]:
    return [round(v, 3) for v in values.tolist()]


def report(result: dict) -> str:
    """One markdown table row: script, share near each optimum, optima covered, share near none."""
    shares = result["shares"].tolist()
    return (f"| {result['name']} | " + " | ".join(f"{s:.3f}" for s in shares) +
            f" | {result['covered']}/{len(OPTIMA)} | {1 - sum(shares):.3f} |")


def mean_reward(result: dict) -> str:
    """The samples' mean true reward and mean learned Q, each against uniform-random actions'."""
    return (f"mean r {result['reward']:.3f} (uniform actions {result['uniform_reward']:.3f}), mean(Q1, Q2) "
            f"{result['q']:.3f} (uniform actions {result['uniform_q']:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=3000, help="critic updates per script")
    parser.add_argument("--samples", type=int, default=4000, help="actions drawn from each policy")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scripts", nargs="+", default=["nclql", "lql"], choices=list(SCRIPTS))
    parser.add_argument("--measure-at", nargs="*", type=int, default=[250, 500, 750, 1000, 1500, 2000, 2500],
                        help="also measure the policies after these numbers of updates (a learning curve)")
    parser.add_argument("--heights", nargs=len(OPTIMA), type=float, default=heights.tolist(),
                        help="height of each optimum, in the order of the table's columns")
    cli = parser.parse_args()
    heights.copy_(torch.tensor(cli.heights))

    results = []
    for name in cli.scripts:
        runs = train_and_sample(name, cli.updates, cli.samples, learning_rate=cli.learning_rate, seed=cli.seed,
                                measure_at=tuple(cli.measure_at))
        for run in runs[:-1]:
            print(f"{name} after {run['num_updates']:>5} updates: {report(run)} "
                  f"mean(Q1, Q2) at the optima {rounded(run['q_at_optima'])}, at the box faces {run['at_faces']:.3f}, "
                  f"{mean_reward(run)}")
            if run["covered"] < len(OPTIMA):
                print(text_histogram(run["samples"]))
        result = runs[-1]
        results.append(result)
        print(f"\n{name}: {cli.updates} updates in {result['train_s']:.0f} s, {cli.samples} samples in "
              f"{result['sample_s']:.1f} s; mean(Q1, Q2) at the optima {rounded(result['q_at_optima'])} "
              f"(target {rounded(result['q_target'])}), at the box faces {result['at_faces']:.3f}, "
              f"{mean_reward(result)}")
        print(text_histogram(result["samples"]))
    optima = " | ".join(f"({x:+.1f}, {y:+.1f})" for x, y in OPTIMA.tolist())
    print(f"\nShare of {cli.samples} samples within {NEAR_RADIUS} of each optimum (seed {cli.seed}, "
          f"{cli.updates} updates); covered = share >= {COVERED_SHARE}\n")
    soft = soft_policy_shares()
    print(f"heights {cli.heights}\n")
    print(f"| policy | {optima} | optima covered | near none |")
    print("|---|" + "---|" * (len(OPTIMA) + 2))
    print("| soft policy exp(w (Q1 + Q2)) of the true Q | " + " | ".join(f"{s:.3f}" for s in soft.tolist()) +
          f" | {int((soft >= COVERED_SHARE).sum())}/{len(OPTIMA)} | {1 - soft.sum():.3f} |")
    for result in results:
        print(report(result))


if __name__ == "__main__":
    main()
