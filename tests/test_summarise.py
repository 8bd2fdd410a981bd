"""tests/results/summarise.py: the results table from TensorBoard logs, and the same table from its own CSV; the IQM
over seeds with its bootstrap interval; the legends' method names; the one-line error without the tool's extras, and
the results tools' tests' skips without them, which name the install."""
import contextlib
import csv
import importlib.util
import io
import os
import re
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from tests.results_extras import INSTALL, import_or_skip

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


def load_tool(name: str):
    """A results tool as a module (tests/results is no package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(SUMMARISE), f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def summarise(out_dir, *sources, steps=("50000", "100000", "200000")) -> list[str]:
    """The tool's command line, run in this process (its imports, rliable's and matplotlib's, are paid once)."""
    import_or_skip("rliable")
    import_or_skip("matplotlib")
    argv = [SUMMARISE, *map(str, sources), "--out-dir", str(out_dir), "--steps", *steps, "--reps", "200"]  # enough
    with mock.patch.object(sys, "argv", argv), contextlib.redirect_stdout(io.StringIO()):
        load_tool("summarise").main()
    with open(os.path.join(out_dir, "table.md")) as f:
        return f.read().splitlines()


def per_seed(values) -> str:
    return f"{np.mean(values):.1f} ({', '.join(f'{v:.1f}' for v in values)})"


def two_seeds_iqm(values) -> str:
    """The IQM cell of two seeds, by hand: 25% of 2 seeds trims none, so the IQM is their mean; a bootstrap resample
    of two seeds is (a, a), (a, b), (b, a) or (b, b), a quarter each at the ends, so the 2.5% and 97.5% percentiles
    of its IQM are the two values."""
    return f"{np.mean(values):.1f} [{min(values):.1f}, {max(values):.1f}] (2 seeds)"


def iqm_columns(evaluations: dict) -> str:
    """The table's last three cells: the final evaluation's IQM, each seed's mean of its last 3, and their IQM."""
    finals = [points[-1][1] for points in evaluations.values()]
    last_threes = [np.mean([value for _, value in points[-3:]]) for points in evaluations.values()]
    return f"{two_seeds_iqm(finals)} | {per_seed(last_threes)} | {two_seeds_iqm(last_threes)} |"


def test_the_table_averages_seeds_and_a_csv_of_an_earlier_summary_gives_the_same_table(tmp_path):
    seed_1, seed_2 = write_run(tmp_path / "runs", 1), write_run(tmp_path / "runs", 2)
    table = summarise(tmp_path / "from_logs", seed_1, seed_2)
    # at 50k after the warm-up (80k), 100k (130k); 200k (230k) is beyond the runs, so it stays empty
    assert table[2] == ("| Hopper-v4 | results_test | 1, 2 | 150.0 (100.0, 200.0) | 200.2 (300.0, 100.5) |  | "
                        "325.1 (250.0, 400.2) | 350.1 (300.0, 400.2) | 325.1 (250.0, 400.2) | "
                        + iqm_columns(EVALUATIONS))
    # seed 2's logs lost: its evaluations come back from the CSV; a log of seed 1 replaces the CSV's seed 1
    csv_path = tmp_path / "from_logs" / "evaluations.csv"
    assert summarise(tmp_path / "from_csv", csv_path) == table
    assert summarise(tmp_path / "mixed", seed_1, csv_path) == table
    # a run folder wins over the CSV's run of the same seed, whichever comes first: seed 1 went on to 230k
    longer = {1: EVALUATIONS[1] + [(230_000, 500.0)], 2: EVALUATIONS[2]}
    seed_1_longer = write_run(tmp_path / "later", 1, longer[1])
    for sources in [(seed_1_longer, csv_path), (csv_path, seed_1_longer)]:
        assert summarise(tmp_path / "longer", *sources)[2] == (
            "| Hopper-v4 | results_test | 1, 2 | 150.0 (100.0, 200.0) | 200.2 (300.0, 100.5) |  | "
            "450.1 (500.0, 400.2) | 450.1 (500.0, 400.2) | 450.1 (500.0, 400.2) | " + iqm_columns(longer))


def interquartile_mean(values) -> float:
    """The IQM by hand: the mean of the middle half once sorted (a quarter of the values dropped at each end)."""
    values = np.sort(values)
    quarter = len(values) // 4
    return float(values[quarter:len(values) - quarter].mean())


def seeded_stratified_bootstrap(scores: np.ndarray, reps: int) -> tuple[np.ndarray, np.ndarray]:
    """The 95% percentile interval of the IQM of each column of `scores` (seeds x columns), computed here without
    rliable: as rliable's StratifiedBootstrap draws them, each resample takes for every column its own seeds,
    numpy.random.choice(seeds, (seeds, 1 task, columns)) from the legacy generator that summarise.py seeds with 0
    (choice with replacement is randint(0, seeds)); the interval is numpy's percentiles 2.5 and 97.5 (linear) of the
    resamples' IQMs."""
    num_seeds, num_columns = scores.shape
    generator = np.random.RandomState(0)
    resampled = np.empty((reps, num_columns))
    for rep in range(reps):
        seeds = generator.randint(0, num_seeds, size=(num_seeds, 1, num_columns))[:, 0]
        resampled[rep] = [interquartile_mean(scores[seeds[:, column], column]) for column in range(num_columns)]
    low, high = np.percentile(resampled, [2.5, 97.5], axis=0)
    return low, high


def test_the_iqm_over_eight_seeds_drops_the_two_lowest_and_highest_and_its_interval_is_the_seeded_bootstrap(tmp_path):
    """Skewed seeds (two outliers above, none below), so that a trim other than 25% a side prints another IQM in both
    columns: 12.5% a side keeps 400 in the finals (100.0 against 45.0) and 534.7 in the last 3 (135.1 against 61.7).
    The interval is the one computed here from the same 200 resamples, to the printed digit."""
    finals = {1: 50.0, 2: 1000.0, 3: 10.0, 4: 400.0, 5: 30.0, 6: 60.0, 7: 20.0, 8: 40.0}  # seeds 2 and 4 outliers
    evaluations = {seed: [(80_000, 0.0), (130_000, final + seed), (180_000, 2 * final), (230_000, final)]
                   for seed, final in finals.items()}
    csv_path = tmp_path / "evaluations.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["env_id", "exp_name", "seed", "env_step", "return"])
        writer.writerows(["Hopper-v4", "results_iqm", seed, step, value]
                         for seed, points in evaluations.items() for step, value in points)
    header, _, row, *_ = summarise(tmp_path / "out", csv_path, steps=("50000",))  # --reps 200
    cells = dict(zip(*([cell.strip() for cell in line.strip("|").split("|")] for line in (header, row))))
    # the columns by hand, seeds in the table's order (1 to 8)
    scores = np.array([[points[-1][1], np.mean([value for _, value in points[-3:]])]
                       for _, points in sorted(evaluations.items())])
    lows, highs = seeded_stratified_bootstrap(scores, reps=200)
    for column, values, low, high in zip(("final: IQM [95% CI]", "last 3 evals: IQM [95% CI]"), scores.T, lows, highs):
        iqm = interquartile_mean(values)
        assert f"{iqm:.1f}" != f"{np.mean(np.sort(values)[1:7]):.1f}", "the data must tell a 12.5% trim from 25%"
        assert cells[column] == f"{iqm:.1f} [{low:.1f}, {high:.1f}] (8 seeds)", column
        assert min(values) < low < iqm < high < max(values)
    assert os.path.getsize(tmp_path / "out" / "Hopper-v4.png") < 200_000


def test_pool_gives_the_seeds_of_two_exp_names_one_more_row_and_leaves_their_own_rows(tmp_path):
    csv_path = tmp_path / "evaluations.csv"
    finals = {("results_a", 1): 100.0, ("results_a", 2): 400.0, ("results_b", 3): 250.0}
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["env_id", "exp_name", "seed", "env_step", "return"])
        writer.writerows(["Hopper-v4", exp_name, seed, step, value] for (exp_name, seed), final in finals.items()
                         for step, value in [(80_000, 10.0 * seed), (130_000, final)])
    argv = ["--pool", "results_a", "results_b", "results_absent"]  # an exp_name without runs is left out
    table = summarise(tmp_path / "out", csv_path, *argv, steps=("50000",))
    rows = {line.split("|")[2].strip(): line for line in table[2:] if line.startswith("| Hopper")}
    assert sorted(rows) == ["results_a", "results_a + results_b", "results_b"]
    cells = [cell.strip() for cell in rows["results_a + results_b"].strip("|").split("|")]
    assert cells[2:4] == ["1, 2, 3", "20.0 (10.0, 20.0, 30.0)"]  # the three seeds at 50k, in seed order
    # 3 seeds: 25% trims none, so the IQM is the mean of 100, 400 and 250 and its interval lies within them
    iqm, low, high = re.fullmatch(r"(\S+) \[(\S+), (\S+)\] \(3 seeds\)", cells[7]).groups()
    assert float(iqm) == 250.0 and 100.0 <= float(low) < 250.0 < float(high) <= 400.0
    # one exp_name alone has nothing to pool with: no extra row
    assert len(summarise(tmp_path / "alone", csv_path, "--pool", "results_a", steps=("50000",))) == len(table) - 1


def test_the_legends_name_the_method_of_each_results_row():
    summarise_module = load_tool("summarise")
    names = {("Hopper-v4", "results_nclql-hopper"): "NC-LQL", ("Hopper-v4", "results_lql-hopper"): "LQL",
             ("Walker2d-v4", "results_nclql-walker2d"): "NC-LQL",
             ("Walker2d-v4", "results_nclql-walker2d-500k"): "NC-LQL, first run, to 500k",
             ("Hopper-v4", "results_lql-step1e-3"): "LQL, step 1e-3",
             ("Hopper-v4", "results_lql-hopper-step1e-4"): "LQL, step 1e-4",  # the 1M run before the sweep
             ("Hopper-v4", "results_lql-annealed-steps"): "LQL, annealed steps",
             ("Walker2d-v4", "results_lql-walker2d-annealed-steps"): "LQL, annealed steps",
             ("Hopper-v4", "results_lql-walker2d-annealed-steps"): "results_lql-walker2d-annealed-steps",
             ("Hopper-v4", "results_nclql-hopper-500k"): "results_nclql-hopper-500k",  # not a row: as it is
             ("Hopper-v4", "results_nclql-hopper-fp32"): "NC-LQL, fp32 chain",
             ("Hopper-v4", "results_lql-hopper-bf16"): "LQL, bf16 chain",
             ("Hopper-v4", "results_nclql-60k-autotune-w"): "NC-LQL, w tuned",
             ("Hopper-v4", "sampler-watch"): "sampler-watch"}
    assert {key: summarise_module.method_name(*key) for key in names} == names
    # every row of the runner has a method's name, not its run name
    run_results = load_tool("run_results")
    unnamed = [row for row, (_, env_id, *_) in run_results.ROWS.items()
               if summarise_module.method_name(env_id, f"results_{row}").startswith("results_")]
    assert not unnamed, f"rows the legends would show by their run names: {unnamed}"


def test_without_rliable_it_says_in_one_line_what_to_install(tmp_path):
    (tmp_path / "rliable.py").write_text("raise ModuleNotFoundError(\"No module named 'rliable'\", name='rliable')\n")
    result = subprocess.run([sys.executable, SUMMARISE, "runs/*", "--out-dir", str(tmp_path / "out")],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1 and not (tmp_path / "out").exists()
    assert result.stderr.splitlines() == [
        "error: summarise.py needs rliable, which is not installed: pip install -r tests/results/requirements.txt"]


def test_w_curves_reads_each_runs_w_and_its_last_levels_entropy(tmp_path):
    """tests/results/w_curves.py, the figure of --autotune-w's study: a tuned run's w is its charts/w, a fixed run's
    its --w; the entropy is the last level's (level_10 after level_9: sorted by number, not by name)."""
    import_or_skip("matplotlib")
    runs = []
    for exp_name, tuned in (("results_nclql-60k-autotune-w", True), ("results_nclql-60k-fixed-w", False)):
        run_dir = str(tmp_path / f"Hopper-v4__{exp_name}__1__1700000000")
        writer = SummaryWriter(run_dir)
        for i, step in enumerate((20_000, 30_000, 40_000)):
            writer.add_scalar("eval/episodic_return", 100.0 * (i + 1), step)
            writer.add_scalar("sampler/entropy/level_9", -9.0, step)  # not the last level
            writer.add_scalar("sampler/entropy/level_10", -1.0 - i, step)
            if tuned:
                writer.add_scalar("charts/w", 500.0 / (i + 2), step)
        writer.close()
        torch.save({"args": {"w": 500.0, "target_entropy": -1.0}}, os.path.join(run_dir, "checkpoint.pt"))
        runs.append(run_dir)
    out = io.StringIO()
    argv = ["w_curves.py", *runs, "--out", str(tmp_path / "w.png")]
    with mock.patch.object(sys, "argv", argv), contextlib.redirect_stdout(out):
        load_tool("w_curves").main()
    # w at the end; the entropy's and the evaluations' last third (one record of three)
    assert "| NC-LQL, w tuned | 1 | 125.0 | -3.00 | 300.0 |" in out.getvalue(), out.getvalue()
    assert "| NC-LQL, fixed w | 1 | 500.0 | -3.00 | 300.0 |" in out.getvalue(), out.getvalue()
    assert os.path.getsize(tmp_path / "w.png") > 1000


def test_without_the_tools_extras_their_tests_skip_naming_the_install(tmp_path):
    """The README's install alone (requirements.txt) leaves out rliable, matplotlib and submitit: the results tools'
    tests skip, and each skip says what to install (pytest -rs shows it), none only "could not import"."""
    for module in ("rliable", "matplotlib", "submitit"):
        (tmp_path / f"{module}.py").write_text(f"raise ModuleNotFoundError('No module named {module}', "
                                               f"name='{module}')\n")
    this_test = "tests/test_summarise.py::test_without_the_tools_extras_their_tests_skip_naming_the_install"
    result = subprocess.run([sys.executable, "-m", "pytest", "tests/test_summarise.py", "tests/test_run_results.py",
                             "--deselect", this_test, "-q", "-rs", "-p", "no:cacheprovider"],
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    skips = re.findall(r"^SKIPPED \[(\d+)\] (\S+): (.*)$", result.stdout, re.MULTILINE)
    (skipped,) = re.findall(r"(\d+) skipped", result.stdout)
    assert sum(int(count) for count, _, _ in skips) == int(skipped) >= 8, result.stdout
    assert [(where, reason) for _, where, reason in skips if not reason.endswith(INSTALL)] == [], result.stdout
