"""Sweep LQL's Langevin step size (--step-lr) at equal budgets; prints the table tests/benchmarks/README.md quotes.

Not collected by pytest (a benchmark, not a test). Each run is `lql_continuous_action.py` as a user would
start it, one torch thread per run so that `--jobs 2` uses both cores of a 2-core machine:

    python tests/benchmarks/sweep_lql_step_size.py --jobs 2   # Hopper-v4, HalfCheetah-v4 x 1e-4 1e-3 1e-2 x seeds 1 2
    python tests/benchmarks/sweep_lql_step_size.py --step-sizes 1e-3 3e-3 --env-ids Walker2d-v4 --seeds 1 2 3 --jobs 2

Score: the mean of the evaluation returns from `--score-from` env steps on (late-budget performance), averaged
over seeds; the table also lists each seed's score.
"""
import argparse
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EVAL_LINE = re.compile(r"^eval +step +([\d,]+): return +(-?[\d.]+)")


def run_one(env_id: str, step_size: float, seed: int, args) -> list[tuple[int, float]]:
    command = [sys.executable, os.path.join(ROOT, "lql_continuous_action.py"), "--env-id", env_id,
               "--step-lr", str(step_size), "--seed", str(seed),
               "--total-timesteps", str(args.total_timesteps), "--learning-starts", str(args.learning_starts),
               "--eval-frequency", str(args.eval_frequency), "--eval-episodes", str(args.eval_episodes),
               "--exp-name", f"lql_sweep_{step_size:g}", "--no-save-model", "--log-interval-s", "60"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"run failed ({' '.join(command)}):\n{result.stderr[-2000:]}")
    evals = [(int(m.group(1).replace(",", "")), float(m.group(2)))
             for m in map(EVAL_LINE.match, result.stdout.splitlines()) if m]
    print(f"{env_id} step size {step_size:g} seed {seed}: evals {evals}", flush=True)
    return evals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-ids", nargs="+", default=["Hopper-v4", "HalfCheetah-v4"])
    parser.add_argument("--step-sizes", nargs="+", type=float, default=[1e-4, 1e-3, 1e-2])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--total-timesteps", type=int, default=15_000, help="env steps after the warm-up")
    parser.add_argument("--learning-starts", type=int, default=5_000)
    parser.add_argument("--eval-frequency", type=int, default=5_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--score-from", type=int, default=15_000, help="env steps, the warm-up included")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()

    configs = [(env_id, step_size, seed)
               for seed in args.seeds for env_id in args.env_ids for step_size in args.step_sizes]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(zip(configs, pool.map(lambda config: run_one(*config, args), configs)))

    def score(env_id, step_size, seed):
        late = [ret for step, ret in results[(env_id, step_size, seed)] if step >= args.score_from]
        return sum(late) / len(late) if late else float("nan")

    seeds = ", ".join(map(str, args.seeds))
    print(f"\nLQL, seeds {seeds}, {args.learning_starts:,} random + {args.total_timesteps:,} learning env steps, "
          f"score = mean eval return from step {args.score_from:,} on ({args.eval_episodes} episodes each), "
          f"mean over seeds (each seed's score in brackets)\n")
    print("| `--step-lr` | " + " | ".join(args.env_ids) + " |")
    print("|---|" + "---|" * len(args.env_ids))
    for step_size in args.step_sizes:
        cells = []
        for env_id in args.env_ids:
            per_seed = [score(env_id, step_size, seed) for seed in args.seeds]
            cells.append(f"{sum(per_seed) / len(per_seed):.1f} ({', '.join(f'{x:.1f}' for x in per_seed)})")
        print(f"| {step_size:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
