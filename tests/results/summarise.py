"""Summarise training runs from their TensorBoard logs: a CSV of every evaluation, a markdown table, one PNG per env.

Not collected by pytest. Each run folder is `runs/{env_id}__{exp_name}__{seed}__{time}` as the scripts write it;
runs with the same env and exp_name are seeds of one curve. A resumed run writes on into its own folder, so its
evaluations come out as one curve. An argument ending in .csv is an evaluations.csv of an earlier summary: its runs
join the others (the seeds whose logs are gone), and a run folder of the same env, exp_name and seed replaces them.

    pip install -r tests/results/requirements.txt   # rliable and matplotlib: this tool's, not the scripts'
    python tests/results/summarise.py runs/* --out-dir results --steps 100000 300000 500000 1000000
    python tests/results/summarise.py tests/results/rows/evaluations.csv runs/* --out-dir tests/results/rows

Writes OUT_DIR/evaluations.csv (env_id, exp_name, seed, env_step, return), OUT_DIR/table.md and OUT_DIR/{env_id}.png.
The table has a line per curve: the evaluation at or just before each of --steps env steps after the --warmup, as
the rows' budgets count them (the mean over seeds, each seed in brackets); each seed's final and best evaluation and
the mean of its last third of evaluations; then, over seeds, the interquartile mean (IQM) with its 95%
stratified-bootstrap interval (rliable, Agarwal et al. 2021) of the final evaluation and of the mean of each seed's
last 3 evaluations. The PNG draws each curve's IQM over seeds at the evaluation steps all its seeds share, with the
interval as a band and each seed as a thin line; a curve of one seed is that seed's evaluations. --pool gives the
seeds of several exp_names (one method on two chains, say) one more table row, all together.
"""
import argparse
import collections
import csv
import importlib
import os
import re
import sys

import numpy as np

CONFIDENCE = 0.95
METHODS = {"nclql": "NC-LQL", "lql": "LQL"}  # the scripts, as the legends name them
# run_results.py's rows beyond a method and env
VARIANTS = {"annealed-steps": "annealed steps", "60k-fixed-w": "fixed w", "60k-autotune-w": "w tuned",
            "60k-autotune-w-no-grad-norm": "w tuned, no grad norm", "hopper-autotune-w": "w tuned",
            "walker2d-500k": "first run, to 500k"}  # renamed in rows/evaluations.csv when Walker2d's row became 1M


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


def last_three_mean(points) -> float:
    """The mean of the run's last 3 evaluations (of all it has, if fewer)."""
    return float(np.mean([value for _, value in points[-3:]]))


def iqm_and_interval(scores: np.ndarray, reps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each column of `scores` (seeds x columns): the IQM over seeds and its 95% interval, the low and high ends.

    The IQM is rliable's aggregate_iqm, the 25% trimmed mean (with fewer than 4 seeds nothing is trimmed: the mean);
    the interval is the percentile interval of `reps` stratified-bootstrap resamples of the seeds (one task, so the
    seeds are resampled within it). rliable resamples each column on its own, so over columns the intervals are
    pointwise. Its resampling draws from numpy's global generator: seeded here, so the same scores give the same
    interval whatever was computed before."""
    from rliable import library

    np.random.seed(0)
    point, interval = library.get_interval_estimates({"curve": scores[:, None, :]}, iqm_of_each_column, reps=reps,
                                                     confidence_interval_size=CONFIDENCE)
    return point["curve"], interval["curve"][0], interval["curve"][1]


def iqm_of_each_column(scores: np.ndarray) -> np.ndarray:
    """rliable's aggregate_iqm (scipy's 25% trimmed mean) over the seeds of each column: scores is seeds x 1 task x
    columns, as rliable passes it (resampled)."""
    import scipy.stats

    return scipy.stats.trim_mean(scores[:, 0], 0.25, axis=0)


def method_name(env_id: str, exp_name: str) -> str:
    """A legend's name for a run: results_nclql-hopper (on Hopper-v4) -> "NC-LQL"; results_lql-step1e-3 and
    results_lql-hopper-step1e-3 -> "LQL, step 1e-3"; results_lql-annealed-steps and (on Walker2d-v4)
    results_lql-walker2d-annealed-steps -> "LQL, annealed steps";
    results_nclql-hopper-fp32 -> "NC-LQL, fp32 chain" (-bf16 likewise); another exp_name is shown as it is."""
    match = re.fullmatch(r"results_(nclql|lql)-(.+)", exp_name)
    if not match:
        return exp_name
    method, variant = METHODS[match[1]], match[2]
    env_row = env_id.split("-")[0].lower()  # Hopper-v4 -> hopper
    if variant == env_row:  # the row of the env itself, e.g. nclql-hopper
        return method
    variant_on_env = variant.removeprefix(f"{env_row}-")  # e.g. lql-hopper-step1e-4 -> step1e-4, on Hopper
    if variant_on_env.startswith("step"):  # LQL's step sizes, e.g. lql-step3e-4 and lql-hopper-step1e-4
        return f"{method}, step {variant_on_env[len('step'):]}"
    if variant in VARIANTS:
        return f"{method}, {VARIANTS[variant]}"
    if variant_on_env in VARIANTS:  # a variant's row on another env, e.g. lql-walker2d-annealed-steps on Walker2d
        return f"{method}, {VARIANTS[variant_on_env]}"
    if variant in (f"{env_row}-fp32", f"{env_row}-bf16"):  # e.g. nclql-hopper-fp32: the env's row on the other chain
        return f"{method}, {variant.split('-')[-1]} chain"
    return exp_name


def method_colors(names) -> dict[str, str]:
    """One colour per method name, by sorted name: the same runs get the same colours in every figure of the tools."""
    return {name: f"C{i}" for i, name in enumerate(sorted(set(names)))}


def seeds_label(count: int) -> str:
    return f"{count} seed{'s' if count > 1 else ''}"


def table_lines(curves: dict, steps: list[int], warmup: int, reps: int) -> list[str]:
    header = ("| env | run | seeds | " + " | ".join(f"{s:,}" for s in steps)
              + " | final | best | mean of the last third of evals | final: IQM [95% CI] | mean of the last 3 evals"
                " | last 3 evals: IQM [95% CI] |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for (env_id, exp_name), seeds in curves.items():
        cells = []
        for step in steps:
            values = [at_or_before(run["points"], step + warmup) for run in seeds]
            known = [v for v in values if v is not None]
            reached = all(run["points"][-1][0] >= step + warmup for run in seeds)
            cells.append(f"{np.mean(known):.1f} ({', '.join(f'{v:.1f}' for v in known)})"
                         if len(known) == len(values) and reached else "")
        finals = [run["points"][-1][1] for run in seeds]
        last_threes = [last_three_mean(run["points"]) for run in seeds]
        for per_seed in (finals, [max(v for _, v in run["points"]) for run in seeds],
                         [last_third_mean(run["points"]) for run in seeds]):
            cells.append(f"{np.mean(per_seed):.1f} ({', '.join(f'{v:.1f}' for v in per_seed)})")
        iqm, low, high = iqm_and_interval(np.array([finals, last_threes]).T, reps)
        cells.append(f"{iqm[0]:.1f} [{low[0]:.1f}, {high[0]:.1f}] ({seeds_label(len(seeds))})")
        cells.append(f"{np.mean(last_threes):.1f} ({', '.join(f'{v:.1f}' for v in last_threes)})")
        cells.append(f"{iqm[1]:.1f} [{low[1]:.1f}, {high[1]:.1f}] ({seeds_label(len(seeds))})")
        lines.append(f"| {env_id} | {exp_name} | {', '.join(r['seed'] for r in seeds)} | " + " | ".join(cells) + " |")
    lines += ["", f"IQM: interquartile mean over seeds (rliable: the 25% trimmed mean; with fewer than 4 seeds it is "
                  f"the mean); [95% CI]: percentile interval of {reps:,} stratified-bootstrap resamples of the seeds. "
                  f"With 1 or 2 seeds the interval only spans the seeds' values: read the seeds' own values beside it."]
    return lines


def pooled_curves(curves: dict, exp_names: list[str]) -> dict:
    """Per env where 2 or more of `exp_names` have runs: (env_id, "A + B") -> all their runs, seed by seed."""
    pooled = {}
    for env_id in sorted({env for env, _ in curves}):
        names = [name for name in exp_names if (env_id, name) in curves]
        if len(names) > 1:
            runs = [run for name in names for run in curves[env_id, name]]
            pooled[env_id, " + ".join(names)] = sorted(runs, key=lambda run: run["seed"])
    return pooled


def plot_env(env_id: str, curves: dict, out_dir: str, title: str, reps: int) -> str:
    """Write OUT_DIR/{env_id}.png, each curve's IQM over seeds with its interval band and thin seed lines; its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=100)
    colors = method_colors(method_name(env, exp_name) for env, exp_name in curves)
    several_seeds = False
    for (env, exp_name), seeds in curves.items():
        if env != env_id:
            continue
        name = method_name(env, exp_name)
        color, label = colors[name], f"{name} ({seeds_label(len(seeds))})"  # a method's colour in every env
        if len(seeds) == 1:
            steps, values = zip(*seeds[0]["points"])
            ax.plot(steps, values, color=color, linewidth=2, label=label)
            continue
        several_seeds = True
        for run in seeds:
            steps, values = zip(*run["points"])
            ax.plot(steps, values, color=color, alpha=0.35, linewidth=0.8)
        common = sorted(set.intersection(*(set(s for s, _ in run["points"]) for run in seeds)))
        scores = np.array([[dict(run["points"])[s] for s in common] for run in seeds])
        iqm, low, high = iqm_and_interval(scores, reps)
        ax.fill_between(common, low, high, color=color, alpha=0.2, linewidth=0)
        ax.plot(common, iqm, color=color, linewidth=2, label=label)
    ax.xaxis.set_major_formatter(lambda step, _: f"{step / 1e6:g}M" if step >= 1e6 else f"{step / 1e3:g}k")
    ax.set_xlabel("env steps (warm-up included)")
    ax.set_ylabel("evaluation return (episode mean)")
    drawn = ("line: IQM over seeds, band: its 95% bootstrap CI, thin lines: each seed" if several_seeds
             else "each line: one seed's evaluations")
    ax.set_title(f"{env_id} {title}".strip() + f"\n{drawn}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out_dir, f"{env_id}.png")
    fig.savefig(path)
    plt.close(fig)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="run folders, and evaluations.csv files of earlier summaries")
    parser.add_argument("--out-dir", default="results")
    parser.add_argument("--steps", nargs="+", type=int, default=[100_000, 300_000, 500_000, 1_000_000])
    parser.add_argument("--warmup", type=int, default=30_000,
                        help="env steps of the warm-up (--learning-starts): --steps count env steps after it")
    parser.add_argument("--title", default="", help="added to each plot's title (e.g. the protocol)")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples of each interval")
    parser.add_argument("--pool", nargs="+", default=[], metavar="EXP_NAME",
                        help="exp_names whose seeds the table also gives together, per env, in a row 'A + B' (e.g. "
                             "one method on the bf16 and fp32 chains); the plots keep them apart")
    cli = parser.parse_args()
    for module in ("rliable", "matplotlib"):  # this tool's own requirements, not the scripts'
        try:
            importlib.import_module(module)
        except ImportError as e:
            sys.exit(f"error: summarise.py needs {e.name}, which is not installed: "
                     f"pip install -r tests/results/requirements.txt")
    if cli.reps < 1:
        sys.exit(f"error: --reps must be positive, got {cli.reps}")

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

    lines = table_lines({**curves, **pooled_curves(curves, cli.pool)}, cli.steps, cli.warmup, cli.reps)
    with open(os.path.join(cli.out_dir, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    for env_id in sorted({env for env, _ in curves}):
        path = plot_env(env_id, curves, cli.out_dir, cli.title, cli.reps)
        print(f"wrote {path} ({os.path.getsize(path) / 1e3:.0f} KB)")


if __name__ == "__main__":
    main()
