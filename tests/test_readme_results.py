"""README's results table says what the runs in tests/results/rows/evaluations.csv scored: each run's final evaluation
and the mean of its last 3, each seed's and their mean, to the digit README prints. A changed README figure, a seed
left out of a row or a run of the CSV missing from the table fails here.

Plain text only (csv, re): no torch, no summariser extras."""
import collections
import csv
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
EVALUATIONS = os.path.join(ROOT, "tests", "results", "rows", "evaluations.csv")
# Runs of the CSV that README's table leaves out on purpose, and why (the records give them)
NOT_IN_README = {  # exp_name: why README's table leaves the run out
    "results_nclql-walker2d-500k": "Walker2d's first run, lost at 500k before its 1M; the 1M run has the row"}
RUN = re.compile(r"`(results_[\w.-]+)` ([\d, ]+)")  # a run group of the runs cell: `exp_name` seeds (chain)
NUMBER = re.compile(r"-?\d+\.\d+")  # README's returns carry decimals; "500k" and "3e-4" do not match


def csv_runs() -> dict:
    """(env_id, exp_name, seed) -> the run's returns in env-step order."""
    points = collections.defaultdict(list)
    with open(EVALUATIONS, newline="") as f:
        for row in csv.DictReader(f):
            run = row["env_id"], row["exp_name"], int(row["seed"])
            points[run].append((int(row["env_step"]), float(row["return"])))
    return {run: [value for _, value in sorted(p)] for run, p in points.items()}


def readme_results_table() -> tuple[list[str], list[list[str]]]:
    """The header and rows of the first table under README's "## Results"."""
    with open(README) as f:
        text = f.read()
    section = text.split("\n## Results\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    return cells[0], [row for row in cells[2:]]


def column(header: list[str], name: str) -> int:
    matches = [i for i, title in enumerate(header) if title.lower().startswith(name)]
    assert len(matches) == 1, f"README's results table needs one column titled '{name}...': {header}"
    return matches[0]


def parsed_rows() -> list[dict]:
    """Each row of README's table: env, its runs [(exp_name, seed)] in order, and the final and last-3 cells'
    numbers."""
    header, rows = readme_results_table()
    env, runs, final, last3 = (column(header, name) for name in ("env", "runs", "final", "last 3"))
    parsed = []
    for row in rows:
        seeds = [(exp_name, int(seed)) for exp_name, group in RUN.findall(row[runs])
                 for seed in re.findall(r"\d+", group)]
        parsed.append({"env": row[env], "runs": seeds, "cells": {"final": row[final], "last 3": row[last3]},
                       "line": " | ".join(row[:3])})
    return parsed


def printed_digits(number: str) -> float:
    """Half a unit of the number's last printed digit: how far a correctly rounded figure may be from the truth."""
    return 0.5 * 10.0 ** -len(number.split(".")[1])


STATISTICS = {"final": lambda returns: returns[-1], "last 3": lambda returns: sum(returns[-3:]) / len(returns[-3:])}


def test_readme_results_table_lists_runs_of_the_csv():
    rows, runs = parsed_rows(), csv_runs()
    assert len(rows) >= 5, f"README's results table: {len(rows)} rows parsed"
    for row in rows:
        assert row["runs"], f"README row '{row['line']}': no `results_...` run and seeds in its runs cell"
        for exp_name, seed in row["runs"]:
            assert (row["env"], exp_name, seed) in runs, (
                f"README row '{row['line']}' names {exp_name} seed {seed} on {row['env']}, which "
                f"tests/results/rows/evaluations.csv does not hold")


def test_every_run_of_the_csv_is_in_readme_results_table():
    listed = {(row["env"], exp_name, seed) for row in parsed_rows() for exp_name, seed in row["runs"]}
    missing = sorted(run for run in csv_runs() if run not in listed and run[1] not in NOT_IN_README)
    assert not missing, f"runs of tests/results/rows/evaluations.csv that README's results table leaves out: {missing}"


@pytest.mark.parametrize("statistic", ["final", "last 3"])
def test_readme_results_match_the_csv(statistic):
    """Each cell is the seeds' mean and, with several seeds, each seed's value in the runs' order, as README prints
    them (one decimal): within half a unit of the last digit of what the CSV gives."""
    runs = csv_runs()
    for row in parsed_rows():
        per_seed = [STATISTICS[statistic](runs[row["env"], exp_name, seed]) for exp_name, seed in row["runs"]]
        expected = [sum(per_seed) / len(per_seed)] + (per_seed if len(per_seed) > 1 else [])
        printed = NUMBER.findall(row["cells"][statistic])
        assert len(printed) == len(expected), (
            f"README row '{row['line']}', {statistic}: '{row['cells'][statistic]}' should give the mean of "
            f"{len(per_seed)} seed(s)" + (" and then each seed" if len(per_seed) > 1 else ""))
        for number, value in zip(printed, expected):
            assert abs(float(number) - value) <= printed_digits(number) + 1e-6, (
                f"README row '{row['line']}', {statistic}: {number}, but tests/results/rows/evaluations.csv gives "
                f"{value:.3f} (cell '{row['cells'][statistic]}', computed {', '.join(f'{v:.2f}' for v in expected)})")
