"""The 2-D multimodal bandit: does each script's policy reach every optimum of a multimodal reward?

One step, a constant dummy observation, a 2-D action a in [-1, 1]^2 and a reward with four separated optima
of equal height at (+-0.5, +-0.5):

    r(a) = sum_k exp(-|a - c_k|^2 / (2 rho^2)),   rho = 0.25

A unimodal policy (a Gaussian actor) puts its mass near at most one optimum, or spreads it over the valleys
between them. The soft policy exp(w Q) of the true critic Q = reward_scale * r puts 1/4 of its mass near each.

Each script's critic is trained with the script's own `update_critic` on batches of uniform-random actions (an
endless warm-up buffer; gamma = 0 and terminated = 1, so the TD target is reward_scale * r), then the script's own
`sample_actions` draws actions with its default sampler (w = 500, gradient normalised, 20 gradient steps).
Reported: the share of samples within NEAR_RADIUS of each optimum, and how many optima hold at least
COVERED_SHARE of the samples.

    python tests/bandit_2d.py                         # full size: the figures README.md quotes
    python tests/bandit_2d.py --updates 600 --samples 2000 --seed 2

Not collected by pytest; tests/test_bandit.py runs a smaller version of the same measurement.
"""
import argparse
import dataclasses
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def reward(actions: torch.Tensor) -> torch.Tensor:
    """r(a) for a batch of actions (batch, 2) -> (batch,)."""
    return torch.exp(-((actions[:, None, :] - OPTIMA) ** 2).sum(-1) / (2 * RHO**2)).sum(-1)


def train_and_sample(name: str, num_updates: int, num_samples: int, batch_size: int = 256,
                     learning_rate: float = 3e-3, seed: int = 1) -> dict:
    """Train script `name`'s critic on the bandit with its own update, then draw actions from its own policy.

    The learning rate is raised from the scripts' 1e-4 so that the critic fits r in hundreds of updates. With
    gamma = 0 the next action a' drawn inside `update_critic` does not enter the TD target, so the training
    copy of Args runs the cheapest chain there (1 step per level); sampling uses the default Args.
    """
    script = SCRIPTS[name]
    args = script.Args(gamma=0.0, learning_rate=learning_rate)
    torch.manual_seed(seed)
    if name == "nclql":
        train_args = dataclasses.replace(args, steps_per_level=1)
        sigmas = nclql.sigma_schedule(args.sigma_max, args.sigma_min, args.num_levels)
        critic, critic_target = (nclql.NoiseConditionedTwinCritic(1, 2, args.num_levels) for _ in range(2))
        update = lambda batch: nclql.update_critic(batch, critic, critic_target, optimizer, sigmas, train_args)  # noqa: E731
        policy = lambda obs: nclql.sample_actions(critic, obs, 2, sigmas, args)  # noqa: E731
    else:
        train_args = dataclasses.replace(args, langevin_steps=1)
        critic, critic_target = lql.TwinCritic(1, 2), lql.TwinCritic(1, 2)
        update = lambda batch: lql.update_critic(batch, critic, critic_target, optimizer, train_args)  # noqa: E731
        policy = lambda obs: lql.sample_actions(critic, obs, 2, args)  # noqa: E731
    critic_target.load_state_dict(critic.state_dict())
    critic_target.requires_grad_(False)
    optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate)

    obs, terminated = torch.zeros(batch_size, 1), torch.ones(batch_size)
    start = time.time()
    for _ in range(num_updates):
        actions = torch.rand(batch_size, 2) * 2 - 1
        update((obs, actions, reward(actions), obs, terminated))
    train_s = time.time() - start

    start = time.time()
    samples = policy(torch.zeros(num_samples, 1)).detach()
    sample_s = time.time() - start

    # The critic's own fit at the optima, to tell a sampler failure from a critic failure.
    with torch.no_grad():
        if name == "nclql":
            level = torch.full((len(OPTIMA),), args.num_levels - 1, dtype=torch.long)
            q_at_optima = critic(torch.zeros(len(OPTIMA), 1), OPTIMA, level).mean(0)
        else:
            q_at_optima = critic(torch.zeros(len(OPTIMA), 1), OPTIMA).mean(0)
    shares = near_shares(samples)
    return {"name": name, "samples": samples, "shares": shares, "covered": int((shares >= COVERED_SHARE).sum()),
            "q_at_optima": q_at_optima, "q_target": args.reward_scale * reward(OPTIMA), "train_s": train_s,
            "sample_s": sample_s, "num_updates": num_updates}


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


def report(result: dict) -> str:
    """One markdown table row: script, share near each optimum, optima covered, share near none."""
    shares = result["shares"].tolist()
    return (f"| {result['name']} | " + " | ".join(f"{s:.3f}" for s in shares) +
            f" | {result['covered']}/{len(OPTIMA)} | {1 - sum(shares):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=3000, help="critic updates per script")
    parser.add_argument("--samples", type=int, default=10000, help="actions drawn from each policy")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scripts", nargs="+", default=["nclql", "lql"], choices=list(SCRIPTS))
    cli = parser.parse_args()

    results = []
    for name in cli.scripts:
        result = train_and_sample(name, cli.updates, cli.samples, learning_rate=cli.learning_rate, seed=cli.seed)
        results.append(result)
        print(f"\n{name}: {cli.updates} updates in {result['train_s']:.0f} s, {cli.samples} samples in "
              f"{result['sample_s']:.1f} s; mean(Q1, Q2) at the optima "
              f"{[round(q, 3) for q in result['q_at_optima'].tolist()]} (target {result['q_target'][0]:.3f})")
        print(text_histogram(result["samples"]))
    optima = " | ".join(f"({x:+.1f}, {y:+.1f})" for x, y in OPTIMA.tolist())
    print(f"\nShare of {cli.samples} samples within {NEAR_RADIUS} of each optimum (seed {cli.seed}, "
          f"{cli.updates} updates); covered = share >= {COVERED_SHARE}\n")
    print(f"| policy | {optima} | optima covered | near none |")
    print("|---|" + "---|" * (len(OPTIMA) + 2))
    print("| soft policy exp(wQ) of the true Q | " + " | ".join(["0.250"] * len(OPTIMA)) +
          f" | {len(OPTIMA)}/{len(OPTIMA)} | 0.000 |")
    for result in results:
        print(report(result))


if __name__ == "__main__":
    main()
