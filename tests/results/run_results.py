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
# LQL's step-size sweep at a real budget (issue 27): 300,000 env steps, evaluated every 25,000, all on the fp32 chain
SWEEP = {f"lql-step{step_lr}": ("lql", "Hopper-v4", 300_000, (1,), ["--step-lr", step_lr, "--eval-frequency", "25000",
                                                                     "--no-bf16-chain"])
         for step_lr in ("1e-4", "3e-4", "1e-3", "3e-3")}
# row: (script, env id, env steps after the warm-up (--total-timesteps), seeds, options beyond the protocol's)
ROWS = {
    "nclql-hopper": ("nclql", "Hopper-v4", 1_000_000, (1, 2), []),
    "lql-hopper": ("lql", "Hopper-v4", 1_000_000, (1,), []),
    "nclql-walker2d": ("nclql", "Walker2d-v4", 500_000, (1,), []),
    "nclql-halfcheetah": ("nclql", "HalfCheetah-v4", 500_000, (1,), []),
    **SWEEP,
    "lql-annealed-steps": ("lql", "Hopper-v4", 1_000_000, (1,), ["--annealed-step-sizes"]),
}
# --bf16-chain only where bf16 matmul is in hardware (the scripts refuse it elsewhere, e.g. on AMD Zen 3) and the row
# does not ask for the fp32 chain
BF16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def command(row: str, seed: int) -> list[str]:
    script, env_id, total, _, options = ROWS[row]
    bf16 = ["--bf16-chain"] if BF16 and "--no-bf16-chain" not in options else []
    return [sys.executable, os.path.join(ROOT, f"{script}_continuous_action.py"), "--env-id", env_id,
            "--total-timesteps", str(total), "--seed", str(seed), "--exp-name", f"results_{row}", "--compile", *bf16,
            "--save-buffer", *([] if "--eval-frequency" in options else ["--eval-frequency", "50000"]), *options]


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
        for row, (_, _, _, seeds, _) in ROWS.items():
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
