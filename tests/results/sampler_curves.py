"""Plot a run's sampler/ statistics (written by the scripts' `sampler_statistics`) from its TensorBoard log.

    python tests/results/sampler_curves.py runs/RUN --out sampler.png

Five panels against env steps, one line per noise level (NC-LQL) or block of steps (LQL), from the first (dark) to
the last (light): the mean |grad_a (Q1 + Q2)| before normalisation, the share of action coordinates on a face of
the box, the spread of a state's chains (std per dimension), their entropy bound (nats per dimension; with
--autotune-w, w on a second axis), and the chain's gain in min(Q1, Q2) over uniform actions. A run logged before
the entropy bound existed leaves that panel empty. Needs matplotlib (`pip install matplotlib`). Not collected by pytest.
"""
import argparse
import os
import re
import sys

PANELS = [("grad_norm", "|grad_a (Q1 + Q2)| before normalisation", True),
          ("on_face", "share of coordinates on a face", False),
          ("spread", "spread of a state's chains (std)", False),
          ("entropy", "entropy bound (nats per dimension)", False)]


def read_sampler_scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(env step, value), ...]} for every sampler/ tag of the run's TensorBoard log, and charts/w if tuned."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(run_dir, size_guidance={"scalars": 0}).Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)]
            for tag in events.Tags()["scalars"] if tag.startswith("sampler/") or tag == "charts/w"}


def group_index(tag: str) -> int:
    return int(re.search(r"_(\d+)$", tag).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--out", default="sampler.png")
    parser.add_argument("--title", default=None, help="default: the run folder's name")
    cli = parser.parse_args()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("error: the plot needs matplotlib: pip install matplotlib")
    scalars = read_sampler_scalars(cli.run_dir)
    if not scalars:
        sys.exit(f"error: no sampler/ statistics in {cli.run_dir} (a run with --sampler-stats-interval 0 logs none)")

    figure, axes = plt.subplots(1, 5, figsize=(20, 3.6), constrained_layout=True)
    for ax, (stat, label, log_scale) in zip(axes, PANELS):
        tags = sorted((tag for tag in scalars if tag.startswith(f"sampler/{stat}/")), key=group_index)
        colors = plt.cm.viridis([i / max(1, len(tags) - 1) for i in range(len(tags))])
        for tag, color in zip(tags, colors):
            steps, values = zip(*scalars[tag])
            ax.plot(steps, values, color=color, linewidth=1, label=tag.split("/")[-1])
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("env steps")
        if log_scale:
            ax.set_yscale("log")
    axes[0].legend(fontsize=7, ncol=2)
    if "charts/w" in scalars:  # --autotune-w: the w the entropy was tuned with
        w_axis = axes[3].twinx()
        w_axis.plot(*zip(*scalars["charts/w"]), color="red", linewidth=1)
        w_axis.set_ylabel("w (tuned)", color="red")
    steps, values = zip(*scalars["sampler/q_gain"])
    axes[4].plot(steps, values, color="black", linewidth=1)
    axes[4].axhline(0, color="grey", linewidth=0.5)
    axes[4].set_title("min(Q1, Q2): chain's actions minus uniform", fontsize=10)
    axes[4].set_xlabel("env steps")
    figure.suptitle(cli.title or os.path.basename(os.path.normpath(cli.run_dir)), fontsize=11)
    figure.savefig(cli.out, dpi=72)
    print(f"wrote {cli.out} ({os.path.getsize(cli.out) / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
