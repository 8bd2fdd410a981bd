"""w and the policy's entropy through training, one line per run: the figure of --autotune-w's study (issue 30).

    python tests/results/w_curves.py runs/Hopper-v4__results_nclql-60k-* --out w_curves.png

Two panels against env steps, a colour per variant (the legend names of summarise.py), a line per seed:
- w: `charts/w` for a run of --autotune-w; the run's fixed --w (from its checkpoint) for the others;
- the entropy bound of the policy's chains after the last noise level (LQL: the last block of steps), in nats per
  action dimension: `sampler/entropy/...`, which every run logs on its probe whatever w does, and the statistic
  that --autotune-w steers to --target-entropy (a dashed line where the runs share one).
It also prints, per run: w at the end, the mean entropy bound over the last third of its records, and the mean
evaluation over the last third (as summarise.py takes it). Needs matplotlib. Not collected by pytest.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sampler_curves import group_index, read_sampler_scalars  # noqa: E402 (the tools are scripts, not a package)
from summarise import last_third_mean, method_colors, method_name, read_run  # noqa: E402


def w_and_entropy(run_dir: str) -> dict:
    """A run's identity and evaluations (read_run), its w [(env step, w)], the last level's entropy bound [(env step,
    nats)] and the --target-entropy it tuned to (None when w was fixed)."""
    run = read_run(run_dir)
    if run is None:
        raise SystemExit(f"error: {run_dir} is not a run folder with evaluations (runs/ENV__EXP__SEED__TIME)")
    scalars = read_sampler_scalars(run_dir)
    entropy_tags = sorted((tag for tag in scalars if tag.startswith("sampler/entropy/")), key=group_index)
    if not entropy_tags:
        raise SystemExit(f"error: {run_dir} logged no sampler/entropy (--sampler-stats-interval 0, or an older run)")
    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    if not os.path.exists(checkpoint):
        raise SystemExit(f"error: {run_dir} has no checkpoint.pt, which holds the run's options (--w)")
    args = torch.load(checkpoint, map_location="cpu", weights_only=True)["args"]
    tuned = "charts/w" in scalars
    entropy = scalars[entropy_tags[-1]]
    # w from --w until the first tuning step (a tuned run that never reached --w-tune-start is drawn at its --w)
    w = [(entropy[0][0], args["w"])] + (scalars["charts/w"] if tuned else [(entropy[-1][0], args["w"])])
    return run | {"w": w, "entropy": entropy, "target_entropy": args["target_entropy"] if tuned else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--out", default="w_curves.png")
    parser.add_argument("--title", default="")
    cli = parser.parse_args()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("error: the plot needs matplotlib: pip install -r tests/results/requirements.txt")
    runs = sorted((w_and_entropy(run_dir) for run_dir in cli.run_dirs),
                  key=lambda run: (run["exp_name"], int(run["seed"])))

    print("| run | seed | w at the end | entropy bound, last third | evaluation, last third |")
    print("|---|---|---|---|---|")
    figure, (w_axis, entropy_axis) = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    colors = method_colors(method_name(run["env_id"], run["exp_name"]) for run in runs)  # as summarise.py's figures
    for run in runs:
        name = method_name(run["env_id"], run["exp_name"])
        print(f"| {name} | {run['seed']} | {run['w'][-1][1]:.1f} | {last_third_mean(run['entropy']):.2f} | "
              f"{last_third_mean(run['points']):.1f} |")
        first_seed = run is next(r for r in runs if method_name(r["env_id"], r["exp_name"]) == name)
        for axis, key in ((w_axis, "w"), (entropy_axis, "entropy")):
            axis.plot(*zip(*run[key]), color=colors[name], linewidth=1, label=name if first_seed else None)
    targets = {run["target_entropy"] for run in runs if run["target_entropy"] is not None}
    if len(targets) == 1:
        entropy_axis.axhline(targets.pop(), color="grey", linestyle="--", linewidth=1, label="target entropy")
    w_axis.set_yscale("log")
    w_axis.set_title("w", fontsize=10)
    entropy_axis.set_title("entropy bound after the last level (nats per dimension)", fontsize=10)
    for axis in (w_axis, entropy_axis):
        axis.set_xlabel("env steps")
        axis.legend(fontsize=8)
    figure.suptitle(f"{runs[0]['env_id']}: w and the policy's entropy {cli.title}".strip(), fontsize=11)
    figure.savefig(cli.out, dpi=72)
    print(f"wrote {cli.out} ({os.path.getsize(cli.out) / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
