"""The picture of the method (README, "The method"): the chains of each sampler on the 2-D bandit's learned critic.

Top row: NC-LQL's critic, (Q1 + Q2)(s, a, l) at levels 0, 3, 6 and 9 (the landscape the annealed chain climbs at that
level), with the chains' positions after each of those levels. Bottom row: LQL's plain critic (Q1 + Q2)(s, a), with
its chains after 5, 10, 15 and 20 steps. Both critics are trained as in bandit_2d.py (four equal optima, white
crosses); the chains are the scripts' own `langevin_policy` at their defaults, watched through its `trace`.

    python tests/benchmarks/bandit_picture.py                # tests/benchmarks/bandit_chains.png, ~2 min on one core
    python tests/benchmarks/bandit_picture.py --updates 3000 --seed 2 --out /tmp/chains.png

Needs matplotlib (`pip install matplotlib`). Not collected by pytest.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.benchmarks.bandit_2d import OPTIMA, SCRIPTS, train_and_sample  # noqa: E402

GRID = 101


def panels(name: str, critic, num_chains: int, seed: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(title, landscape on a GRID x GRID grid of [-1, 1]^2, chain positions) for the four panels of a script."""
    script = SCRIPTS[name]
    args = script.Args(cuda=False)
    axis = torch.linspace(-1, 1, GRID)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)  # row j: a2 = axis[j]
    trace = []
    torch.manual_seed(seed)
    with torch.no_grad():
        script.langevin_policy(critic, torch.zeros(num_chains, 1), args, trace)
    if name == "nclql":
        levels, per_level = (0, 3, 6, 9), args.steps_per_level
        result = []
        for level in levels:
            with torch.no_grad():
                landscape = critic(torch.zeros(len(grid), 1), grid, torch.full((len(grid),), level)).sum(0)
            sigma = critic.sigmas[level].item()
            step = 0.5 * args.step_lr * (sigma / args.sigma_min) ** 2 * args.w  # a normalised step's length
            title = f"NC-LQL after level {level}\nsigma {sigma:.3g}, step {step:.3g}"
            result.append((title, landscape.view(GRID, GRID), trace[(level + 1) * per_level - 1][1]))
        return result
    with torch.no_grad():
        landscape = critic(torch.zeros(len(grid), 1), grid).sum(0).view(GRID, GRID)
    step = 0.5 * args.step_lr * args.w
    return [(f"LQL after {k} steps\nstep {step:.3g}", landscape, trace[k - 1][1]) for k in (5, 10, 15, 20)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=2000,
                        help="critic updates per script (bandit_2d.py's default: 3000)")
    parser.add_argument("--chains", type=int, default=400, help="chains drawn, one point each")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "bandit_chains.png"))
    cli = parser.parse_args()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("error: the picture needs matplotlib: pip install matplotlib")

    torch.set_num_threads(1)
    rows = []
    for name in ("nclql", "lql"):
        critic = train_and_sample(name, cli.updates, num_samples=1, seed=cli.seed)[-1]["critic"]
        rows.append(panels(name, critic, cli.chains, cli.seed))
    figure, axes = plt.subplots(2, 4, figsize=(13, 7.2), constrained_layout=True)
    for row_axes, row in zip(axes, rows):
        for ax, (title, landscape, positions) in zip(row_axes, row):
            axis = torch.linspace(-1, 1, GRID)
            ax.contourf(axis, axis, landscape.numpy(), levels=12, cmap="viridis")
            ax.scatter(positions[:, 0], positions[:, 1], s=5, c="tab:red", alpha=0.5, linewidths=0, clip_on=False)
            ax.scatter(OPTIMA[:, 0], OPTIMA[:, 1], marker="x", s=40, c="white")
            on_corner = (positions.abs() == 1).all(-1).float().mean().item()
            ax.set_title(f"{title}, {100 * on_corner:.0f}% on a corner", fontsize=10)
            ax.set_xlim(-1.08, 1.08)
            ax.set_ylim(-1.08, 1.08)
            ax.set_aspect("equal")
            ax.set_xticks([-1, 0, 1])
            ax.set_yticks([-1, 0, 1])
    figure.suptitle(f"{cli.chains} chains (red) on each critic (Q1 + Q2, brighter is higher) after {cli.updates} "
                    f"updates on the 2-D bandit, seed {cli.seed}; white crosses: the four optima", fontsize=11)
    figure.savefig(cli.out, dpi=72)
    print(f"wrote {cli.out} ({os.path.getsize(cli.out) / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
