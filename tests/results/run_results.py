"""Run one row of the results table (README "Results"), or resume the rows' stopped runs. Not collected by pytest.

Each row is the authors' protocol (5 envs, 30,000 uniform-random transitions, one update per vector step, 20
evaluation episodes) on the fast path (--compile, and --bf16-chain where the CPU has bf16), evaluated every 50,000
env steps, with the replay buffer saved in each checkpoint so that a stopped run resumes where it stopped.

    python tests/results/run_results.py nclql-hopper --seed 1          # one run, in the foreground
    python tests/results/run_results.py --resume-stopped                # resume every stopped run, one after another
    python tests/results/run_results.py nclql-hopper --seed 2 --resume-stopped   # resume that run only
    python tests/results/run_results.py --list                          # the rows and their commands

Every command it starts is appended, with the repository's commit and the time, to runs/results_commands.txt.
Summarise with tests/results/summarise.py.
"""
import argparse
import datetime
import glob
import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# row: (script, env id, env steps after the warm-up (--total-timesteps), seeds)
ROWS = {
    "nclql-hopper": ("nclql", "Hopper-v4", 1_000_000, (1, 2)),
    "lql-hopper": ("lql", "Hopper-v4", 1_000_000, (1,)),
    "nclql-walker2d": ("nclql", "Walker2d-v4", 500_000, (1,)),
    "nclql-halfcheetah": ("nclql", "HalfCheetah-v4", 500_000, (1,)),
}
# --bf16-chain only where bf16 matmul is in hardware (the scripts refuse it elsewhere, e.g. on AMD Zen 3)
BF16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
FAST_PATH = ["--compile", *(["--bf16-chain"] if BF16 else []), "--save-buffer", "--eval-frequency", "50000"]


def command(row: str, seed: int) -> list[str]:
    script, env_id, total, _ = ROWS[row]
    return [sys.executable, os.path.join(ROOT, f"{script}_continuous_action.py"), "--env-id", env_id,
            "--total-timesteps", str(total), "--seed", str(seed), "--exp-name", f"results_{row}", *FAST_PATH]


def run_logged(argv: list[str]) -> int:
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    os.makedirs("runs", exist_ok=True)
    with open("runs/results_commands.txt", "a") as f:
        f.write(f"{datetime.datetime.now():%Y-%m-%d %H:%M} {commit} {' '.join(argv[1:])}\n")
    return subprocess.run(argv).returncode


def stopped_runs() -> list[str]:
    """Checkpoints of results runs that have not reached their --total-timesteps."""
    stopped = []
    for path in sorted(glob.glob("runs/*__results_*__*/checkpoint.pt")):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        args = checkpoint["args"]
        if checkpoint["learning_step"] <= args["total_timesteps"]:
            stopped.append(path)
    return stopped


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("row", nargs="?", choices=list(ROWS))
    parser.add_argument("--seed", type=int, help="one of the row's seeds (default: its first)")
    parser.add_argument("--resume-stopped", action="store_true")
    parser.add_argument("--list", action="store_true")
    cli = parser.parse_args()
    if cli.list:
        for row, (_, _, _, seeds) in ROWS.items():
            for seed in seeds:
                print(f"{row} seed {seed}: {' '.join(command(row, seed)[1:])}")
        return 0
    if cli.resume_stopped:
        paths = stopped_runs()
        if cli.row:  # only that row's run (of --seed, if given)
            paths = [p for p in paths if p.split("__")[1] == f"results_{cli.row}"
                     and (cli.seed is None or p.split("__")[2] == str(cli.seed))]
        print(f"{len(paths)} stopped run(s): {', '.join(paths) or 'none'}")
        script_of = {f"results_{row}": script for row, (script, *_) in ROWS.items()}
        scripts = [os.path.join(ROOT, f"{script_of[path.split('__')[1]]}_continuous_action.py") for path in paths]
        codes = [run_logged([sys.executable, script, "--resume", path]) for script, path in zip(scripts, paths)]
        return max(codes, default=0)
    if not cli.row:
        parser.error("give a row (see --list) or --resume-stopped")
    seed = cli.seed if cli.seed is not None else ROWS[cli.row][3][0]
    return run_logged(command(cli.row, seed))


if __name__ == "__main__":
    sys.exit(main())
