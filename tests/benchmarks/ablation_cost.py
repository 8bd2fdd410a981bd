"""What the ablation saves: NC-LQL, LQL with --annealed-step-sizes, and LQL, side by side in one process.

The ablation runs NC-LQL's step sizes on LQL's plain critic: no smoothing step (one backward pass fewer per update)
and no level input (no level embedding, 16 inputs fewer at fc1). For each variant, on the path the results runs took
(--compile --bf16-chain where the CPU has bf16), it times one update_critic and one act (5 Hopper-shaped states),
interleaved round by round so that a drifting machine's speed falls on all three alike, then the real training loop's
env steps/s (bench_speed.training_sps). Not collected by pytest; run it on a quiet machine:

    python tests/benchmarks/ablation_cost.py                 # ~5 minutes on 2 cores, compiles included
    python tests/benchmarks/ablation_cost.py --no-compile --repeats 5 --sps-updates 50   # a quick eager check
"""
import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.benchmarks.bench_speed import SCRIPTS, has_bf16_matmul, make_parts, timed_s, training_sps  # noqa: E402

VARIANTS = {"NC-LQL": ("nclql", {}), "LQL --annealed-step-sizes": ("lql", {"annealed_step_sizes": True}),
            "LQL": ("lql", {})}


def parts(script, overrides, compiled, bf16, device, obs_dim=11, act_dim=3, batch_size=256, num_envs=5):
    """update() and act() closures over an update's pieces, built as train() builds them (bench_speed.make_parts)."""
    args, critic, critic_target, optimizer, policy, chain_critic = make_parts(script, device, compiled, bf16, obs_dim,
                                                                              act_dim, **overrides)
    batch = (torch.randn(batch_size, obs_dim), torch.rand(batch_size, act_dim) * 2 - 1, torch.randn(batch_size),
             torch.randn(batch_size, obs_dim), torch.zeros(batch_size))
    states = torch.randn(num_envs, obs_dim)

    def update():
        script.update_critic(batch, critic, critic_target, optimizer, policy, args, chain_critic)

    def act():
        with torch.no_grad():
            policy(critic, states, args)

    return update, act


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--repeats", type=int, default=30, help="interleaved rounds of update and act timings")
    parser.add_argument("--sps-updates", type=int, default=600, help="updates in each training-loop run")
    parser.add_argument("--sps-interval-s", type=float, default=5.0)
    cli = parser.parse_args()
    device, bf16 = torch.device("cpu"), cli.compile and has_bf16_matmul(torch.device("cpu"))
    built = {name: parts(SCRIPTS[script], overrides, cli.compile, bf16, device)
             for name, (script, overrides) in VARIANTS.items()}
    for update, act in built.values():  # the first calls compile
        update(), act()
    times = {name: {"update": [], "act": []} for name in VARIANTS}
    for _ in range(cli.repeats):
        for name, (update, act) in built.items():
            times[name]["update"].append(timed_s(update, device) * 1e3)
            times[name]["act"].append(timed_s(act, device) * 1e3)
    sps_cli = argparse.Namespace(env_id="Hopper-v4", num_envs=5, sps_learning_starts=1000,
                                 sps_updates=cli.sps_updates, sps_interval_s=cli.sps_interval_s)
    sps = {name: training_sps(SCRIPTS[script], device, cli.compile, bf16, sps_cli, **overrides)
           for name, (script, overrides) in VARIANTS.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, compile={cli.compile}, bf16_chain={bf16}")
    print(f"{'variant':28s} {'update ms':>10s} {'act ms':>8s} {'env steps/s':>12s} {'vs NC-LQL':>10s}")
    for name in VARIANTS:
        update_ms, act_ms = (statistics.median(times[name][key]) for key in ("update", "act"))
        print(f"{name:28s} {update_ms:10.2f} {act_ms:8.2f} {sps[name]:12.1f} {sps[name] / sps['NC-LQL']:9.2f}x")


if __name__ == "__main__":
    main()
