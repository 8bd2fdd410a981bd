"""Bit for bit: both scripts of two trees run the same short Hopper-v4 runs with learning, and every tensor and value
of their final checkpoints is compared with torch.equal (critics, targets, Adam, counters, random states, buffer).

For a redesign that must change nothing the runs compute. Check out the old tree beside the new one (e.g. `git
worktree add --detach ../old REV`), then, outside the repository:

    python tests/benchmarks/compare_trees.py ../old . --out /tmp/compare     # 16 runs, ~10 minutes on 2 idle cores

Paths: eager, --compile, --compile --bf16-chain (where the CPU has bf16 matmul) and --autotune-w; 200 updates each,
two evaluations, sampler statistics every 50 updates. A tree's runs are kept in OUT/TAG/ and not run again, so the
old tree's runs serve several new trees (--run new). Not collected by pytest.
"""
import argparse
import glob
import os
import subprocess
import sys

import torch

VARIANTS = {"eager": [], "compile": ["--compile"], "bf16": ["--compile", "--bf16-chain"],
            "autotune": ["--autotune-w", "--w-tune-start", "50", "--w-tune-interval", "50"]}
BASE = ["--env-id", "Hopper-v4", "--total-timesteps", "1000", "--learning-starts", "1000", "--eval-episodes", "3",
        "--eval-frequency", "500", "--seed", "3", "--save-buffer", "--no-cuda", "--sampler-stats-interval", "50"]


def run(tree: str, out: str) -> None:
    for script in ("nclql", "lql"):
        for name, options in VARIANTS.items():
            folder = os.path.join(out, f"{script}_{name}")
            if glob.glob(f"{folder}/runs/*/checkpoint.pt"):
                continue
            os.makedirs(folder, exist_ok=True)
            command = [sys.executable, os.path.join(os.path.abspath(tree), f"{script}_continuous_action.py"), *BASE,
                       *options]
            result = subprocess.run(command, cwd=folder, capture_output=True, text=True)
            print(out, script, name, "exit code", result.returncode, result.stderr[-300:] if result.returncode else "",
                  flush=True)


def differences(a, b, path="") -> list[str]:
    """Where two checkpoints differ: tensors by torch.equal and dtype, the rest by ==."""
    if isinstance(a, torch.Tensor):
        return [] if isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b) else [path]
    if isinstance(a, dict):
        found = [] if set(a) == set(b) else [f"{path} keys {sorted(set(a) ^ set(b))}"]
        return found + [d for key in set(a) & set(b) for d in differences(a[key], b[key], f"{path}/{key}")]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} against {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} against {b!r}"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--out", default="compare_trees")
    parser.add_argument("--run", choices=["old", "new", "both"], default="both")
    cli = parser.parse_args()
    for tag in ("old", "new"):
        if cli.run in (tag, "both"):
            run(getattr(cli, tag), os.path.join(cli.out, tag))
    for script in ("nclql", "lql"):
        for name in VARIANTS:
            old, new = (torch.load(glob.glob(os.path.join(cli.out, tag, f"{script}_{name}", "runs", "*",
                                                          "checkpoint.pt"))[0], weights_only=False)
                        for tag in ("old", "new"))
            found = differences(old, new)
            print(f"{script:6s} {name:9s} {old['num_updates']} updates, evaluations {old['eval_returns']}: "
                  f"{'bit for bit' if not found else 'DIFFER ' + str(found[:8])}")


if __name__ == "__main__":
    main()
