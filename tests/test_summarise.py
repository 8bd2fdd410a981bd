"""tests/results/summarise.py: the results table from TensorBoard logs, and the same table from its own CSV."""
import os
import subprocess
import sys

from torch.utils.tensorboard import SummaryWriter

SUMMARISE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "summarise.py")
# seed -> evaluations (env step, return); the warm-up is 30,000 env steps
EVALUATIONS = {1: [(80_000, 100.0), (130_000, 300.0), (180_000, 250.0)],
               2: [(80_000, 200.0), (130_000, 100.5), (180_000, 400.25)]}


def write_run(runs_dir, seed: int, evaluations=None) -> str:
    run_dir = os.path.join(runs_dir, f"Hopper-v4__results_test__{seed}__1700000000")
    writer = SummaryWriter(run_dir)
    for step, value in evaluations or EVALUATIONS[seed]:
        writer.add_scalar("eval/episodic_return", value, step)
    writer.add_scalar("charts/SPS", 100, 5_000)  # other tags are ignored
    writer.close()
    return run_dir


def summarise(out_dir, *sources) -> list[str]:
    subprocess.run([sys.executable, SUMMARISE, *map(str, sources), "--out-dir", str(out_dir), "--steps", "50000",
                    "100000", "200000"], check=True, capture_output=True)
    with open(os.path.join(out_dir, "table.md")) as f:
        return f.read().splitlines()


def test_the_table_averages_seeds_and_a_csv_of_an_earlier_summary_gives_the_same_table(tmp_path):
    seed_1, seed_2 = write_run(tmp_path / "runs", 1), write_run(tmp_path / "runs", 2)
    table = summarise(tmp_path / "from_logs", seed_1, seed_2)
    # at 50k after the warm-up (80k), 100k (130k); 200k (230k) is beyond the runs, so it stays empty
    assert table[2] == ("| Hopper-v4 | results_test | 1, 2 | 150.0 (100.0, 200.0) | 200.2 (300.0, 100.5) |  | "
                        "325.1 (250.0, 400.2) | 350.1 (300.0, 400.2) | 325.1 (250.0, 400.2) |")
    # seed 2's logs lost: its evaluations come back from the CSV; a log of seed 1 replaces the CSV's seed 1
    csv_path = tmp_path / "from_logs" / "evaluations.csv"
    assert summarise(tmp_path / "from_csv", csv_path) == table
    assert summarise(tmp_path / "mixed", seed_1, csv_path) == table
    # a run folder wins over the CSV's run of the same seed, whichever comes first: seed 1 went on to 230k
    seed_1_longer = write_run(tmp_path / "later", 1, EVALUATIONS[1] + [(230_000, 500.0)])
    for sources in [(seed_1_longer, csv_path), (csv_path, seed_1_longer)]:
        assert summarise(tmp_path / "longer", *sources)[2] == (
            "| Hopper-v4 | results_test | 1, 2 | 150.0 (100.0, 200.0) | 200.2 (300.0, 100.5) |  | "
            "450.1 (500.0, 400.2) | 450.1 (500.0, 400.2) | 450.1 (500.0, 400.2) |")
