"""Why --autotune-w measures entropy_bound and not a k-nearest-neighbour estimate. Not collected by pytest.

    python tests/benchmarks/entropy_estimators.py                    # 64 chains a state, 50 draws: README's figures
    python tests/benchmarks/entropy_estimators.py --chains 256 --draws 20

Each draw is one state's chains (--chains actions in the box [-1, 1]^d, as the sampler's probe draws them) from a law
whose entropy is known. On each draw it takes the scripts' entropy_bound and the Kozachenko-Leonenko estimate with
k = 3 (Kozachenko & Leonenko 1987; Kraskov et al. 2004, eq. 20):
    H ~ psi(N) - psi(k) + log V_d + (d / N) sum_i log eps_i,
with eps_i the distance from chain i to its k-th nearest neighbour and V_d the volume of the unit ball in d dimensions.
It prints, per law and dimension, the truth and each estimate's mean and spread over the draws, in nats per dimension.
"""
import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import nclql_continuous_action as nclql  # noqa: E402  (lql's entropy_bound is the same function)

GAUSSIAN_AT_UNIT_STD = 0.5 * math.log(2 * math.pi * math.e)  # the entropy of N(0, 1), in nats


def kozachenko_leonenko(chains: torch.Tensor, k: int = 3) -> float:
    """The k-nearest-neighbour entropy estimate of the law of chains (N, d), in nats per dimension. Chains that share
    a point with k others (clipped onto one corner) have eps = 0: the estimate is -inf there."""
    num_chains, dim = chains.shape
    distances = torch.cdist(chains.double(), chains.double())
    distances.fill_diagonal_(math.inf)  # a chain is not its own neighbour
    eps = distances.kthvalue(k, dim=1).values
    log_unit_ball = 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim + 1)
    digamma = torch.special.digamma(torch.tensor([float(num_chains), float(k)], dtype=torch.float64))
    entropy = digamma[0] - digamma[1] + log_unit_ball + dim * eps.log().mean()
    return entropy.item() / dim


def laws(dim: int):
    """(name, draw(num_chains) -> (num_chains, dim) in the box, true entropy in nats per dimension)."""
    rho = 0.9  # neighbouring dimensions' noise correlated: an AR(1) walk across dimensions, det R = (1 - rho^2)^(d-1)

    def correlated(n):
        z, x = torch.randn(n, dim), torch.empty(n, dim)
        x[:, 0] = z[:, 0]
        for j in range(1, dim):
            x[:, j] = rho * x[:, j - 1] + math.sqrt(1 - rho**2) * z[:, j]
        return 0.05 * x

    return [
        ("uniform in the box", lambda n: torch.rand(n, dim) * 2 - 1, math.log(2)),
        ("Gaussian, std 0.05", lambda n: 0.05 * torch.randn(n, dim), GAUSSIAN_AT_UNIT_STD + math.log(0.05)),
        ("Gaussian, std 0.05, rho 0.9", correlated,
         GAUSSIAN_AT_UNIT_STD + math.log(0.05) + (dim - 1) * math.log(1 - rho**2) / (2 * dim)),
        ("half the mass on a face", lambda n: torch.where(torch.rand(n, dim) < 0.5, 1.0, torch.rand(n, dim) * 2 - 1),
         -math.inf),
        ("every chain on one corner", lambda n: torch.ones(n, dim), -math.inf),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, default=64, help="chains a state (the probe's default: 64)")
    parser.add_argument("--draws", type=int, default=50, help="states, each an independent draw of the chains")
    parser.add_argument("--dims", type=int, nargs="+", default=[3, 17],
                        help="action dimensions (Hopper: 3; Humanoid: 17)")
    parser.add_argument("--seed", type=int, default=0)
    cli = parser.parse_args()
    torch.manual_seed(cli.seed)
    print(f"{cli.chains} chains a state, {cli.draws} draws; nats per dimension: mean (std over draws)\n")
    print("| law | d | truth | entropy_bound | bound - truth | KL, k = 3 | KL - truth |")
    print("|---|---|---|---|---|---|---|")
    for dim in cli.dims:
        for name, draw, truth in laws(dim):
            samples = [draw(cli.chains) for _ in range(cli.draws)]
            bound = torch.tensor([nclql.entropy_bound(s.unsqueeze(0)).item() for s in samples])
            knn = torch.tensor([kozachenko_leonenko(s) for s in samples])
            row = [name, str(dim), f"{truth:.2f}"]
            for estimate in (bound, knn):
                finite = estimate[estimate.isfinite()]
                if len(finite) < len(estimate):  # a -inf draw makes the mean -inf: say how many
                    row += [f"-inf on {len(estimate) - len(finite)} of {len(estimate)} draws", "-"]
                else:
                    row += [f"{estimate.mean():.2f} ({estimate.std():.2f})",
                            f"{estimate.mean() - truth:+.2f}" if math.isfinite(truth) else "finite; truth -inf"]
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
