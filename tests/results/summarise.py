"""Summarise training runs from their TensorBoard logs: a CSV of every evaluation, a markdown table, one PNG per env.

Not collected by pytest. Each run folder is `runs/{env_id}__{exp_name}__{seed}__{time}` as the scripts write it;
runs with the same env and exp_name are seeds of one curve. A resumed run writes on into its own folder, so its
evaluations come out as one curve. An argument ending in .csv is an evaluations.csv of an earlier summary: its runs
join the others (the seeds whose logs are gone), and a run folder of the same env, exp_name and seed replaces them.

    python tests/results/summarise.py runs/* --out-dir results --steps 100000 300000 500000 1000000
    python tests/results/summarise.py tests/results/rows/evaluations.csv runs/* --out-dir tests/results/rows

Writes OUT_DIR/evaluations.csv (env_id, exp_name, seed, env_step, return), OUT_DIR/table.md (per curve, the
evaluation at or just before each of --steps env steps after the --warmup, as the rows' budgets count them: the mean
over seeds, each seed in brackets; then each seed's final and best evaluation and the mean of its last third) and OUT_DIR/{env_id}.png (needs matplotlib, `pip install matplotlib`; it is not
a requirement of the scripts, and without it the PNGs are skipped with a note).
"""
import argparse
import collections
import csv
import os
import sys

import numpy as np


def read_run(run_dir: str) -> dict | None:
    """The run's identity, from its folder name, and its evaluations [(env_step, return)] from its event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    parts = os.path.basename(os.path.normpath(run_dir)).split("__")
    if len(parts) < 4:
        return None
    env_id, exp_name, seed = parts[0], "__".join(parts[1:-2]), parts[-2]
    events = EventAccumulator(run_dir).Reload()
    if "eval/episodic_return" not in events.Tags()["scalars"]:
        return None
    points = [(event.step, event.value) for event in events.Scalars("eval/episodic_return")]
    return {"env_id": env_id, "exp_name": exp_name, "seed": seed, "points": sorted(points)}


def read_csv(path: str) -> list[dict]:
    """The runs of an evaluations.csv written by an earlier summary, in read_run's form."""
    points = collections.defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            points[row["env_id"], row["exp_name"], row["seed"]].append((int(row["env_step"]), float(row["return"])))
    return [{"env_id": env_id, "exp_name": exp_name, "seed": seed, "points": sorted(run_points)}
            for (env_id, exp_name, seed), run_points in points.items()]


def at_or_before(points, step):
    """The evaluation at `step`, or the last one before it; None if the run has none that early."""
    earlier = [value for s, value in points if s <= step]
    return earlier[-1] if earlier else None


def last_third_mean(points) -> float:
    values = [value for _, value in points]
    return float(np.mean(values[-max(1, len(values) // 3):]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="run folders, and evaluations.csv files of earlier summaries")
    parser.add_argument("--out-dir", default="results")
    parser.add_argument("--steps", nargs="+", type=int, default=[100_000, 300_000, 500_000, 1_000_000])
    parser.add_argument("--warmup", type=int, default=30_000,
                        help="env steps of the warm-up (--learning-starts): --steps count env steps after it")
    parser.add_argument("--title", default="", help="added to each plot's title (e.g. the protocol)")
    cli = parser.parse_args()

    runs = {}  # (env_id, exp_name, seed) -> run: a run folder replaces a CSV's run of the same seed
    for path in sorted(cli.run_dirs, key=lambda path: not path.endswith(".csv")):
        for run in read_csv(path) if path.endswith(".csv") else [read_run(path)]:
            if run:
                runs[run["env_id"], run["exp_name"], run["seed"]] = run
    runs = list(runs.values())
    if not runs:
        sys.exit("error: no run folder with evaluations among the arguments (expected runs/ENV__EXP__SEED__TIME or "
                 "an evaluations.csv)")
    os.makedirs(cli.out_dir, exist_ok=True)
    curves = collections.defaultdict(list)  # (env_id, exp_name) -> runs, one per seed
    for run in sorted(runs, key=lambda r: (r["env_id"], r["exp_name"], r["seed"])):
        curves[run["env_id"], run["exp_name"]].append(run)

    with open(os.path.join(cli.out_dir, "evaluations.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["env_id", "exp_name", "seed", "env_step", "return"])
        for run in runs:
            writer.writerows([run["env_id"], run["exp_name"], run["seed"], step, value]  # exact: tables re-read it
                             for step, value in run["points"])

    header = ("| env | run | seeds | " + " | ".join(f"{s:,}" for s in cli.steps)
              + " | final | best | mean of the last third of evals |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for (env_id, exp_name), seeds in curves.items():
        cells = []
        for step in cli.steps:
            values = [at_or_before(run["points"], step + cli.warmup) for run in seeds]
            known = [v for v in values if v is not None]
            reached = all(run["points"][-1][0] >= step + cli.warmup for run in seeds)
            cells.append(f"{np.mean(known):.1f} ({', '.join(f'{v:.1f}' for v in known)})"
                         if len(known) == len(values) and reached else "")
        for per_seed in ([run["points"][-1][1] for run in seeds], [max(v for _, v in run["points"]) for run in seeds],
                         [last_third_mean(run["points"]) for run in seeds]):
            cells.append(f"{np.mean(per_seed):.1f} ({', '.join(f'{v:.1f}' for v in per_seed)})")
        lines.append(f"| {env_id} | {exp_name} | {', '.join(r['seed'] for r in seeds)} | " + " | ".join(cells) + " |")
    with open(os.path.join(cli.out_dir, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed (`pip install matplotlib`): no PNG written", file=sys.stderr)
        return
    for env_id in sorted({env for env, _ in curves}):
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
        for index, ((env, exp_name), seeds) in enumerate(curves.items()):
            if env != env_id:
                continue
            color = f"C{index}"
            for run in seeds:
                steps, values = zip(*run["points"])
                ax.plot(steps, values, color=color, alpha=0.35, linewidth=1)
            common = sorted(set.intersection(*(set(s for s, _ in run["points"]) for run in seeds)))
            mean = [np.mean([dict(run["points"])[s] for run in seeds]) for s in common]
            label = f"{exp_name} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})"
            ax.plot(common, mean, color=color, linewidth=2, label=label)
        ax.set_xlabel("env steps (warm-up included)")
        ax.set_ylabel("evaluation return")
        ax.set_title(f"{env_id} {cli.title}".strip())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(cli.out_dir, f"{env_id}.png")
        fig.savefig(path)
        plt.close(fig)
        print(f"wrote {path} ({os.path.getsize(path) / 1e3:.0f} KB)")


if __name__ == "__main__":
    main()
