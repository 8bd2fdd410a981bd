"""Speed benchmark: update ms, act ms and env steps/s for both scripts, eager and --compile, fp32 and --bf16-chain,
against the FLOP floors.

Not collected by pytest. Run it on a quiet machine (timings share the CPU with anything else running):

    python tests/benchmarks/bench_speed.py                                  # both scripts, eager and compiled, CPU (+ CUDA)
    python tests/benchmarks/bench_speed.py --paths eager --no-sps           # quick: update/act times only
    python tests/benchmarks/bench_speed.py --paths compile --precisions fp32 bf16   # the fast path, without and with --bf16-chain
    python tests/benchmarks/bench_speed.py --cleanrl-sac ../cleanrl/cleanrl/sac_continuous_action.py --cleanrl-python PY

- update ms: one `update_critic` at --batch-size on random Hopper-shaped data (median of --repeats).
- act ms: `langevin_policy` on --num-envs states (what the loop does once per vector step).
- stats ms: one `sampler_statistics` at the defaults (16 probe states x 64 chains, on the critic as the path builds
  it; its first call compiles the critic for the probe's shape on the fast path), and stats share: that against
  the scripts' --sampler-stats-interval (default 1000) updates and acts, the part of a run the default statistics
  cost (env steps not counted, so the share is an upper bound).
- tune ms: one `tune_w` (--autotune-w's step: the probe's 16 x 64 chains drawn by the policy as the path builds it,
  on the critic the TD target's chain runs on, the bf16 copy with --bf16-chain; compiled on the fast path, its first
  call compiling the chain for the probe's shape), and tune share: that against the scripts' --w-tune-interval
  (default 250) updates and acts.
- floor ms: the update's matmul FLOPs (as torch's flop counter counts them, see `update_flops`) divided by
  this machine's fp32 matmul rate, measured here on a 2048 x 2048 matmul at the start. update / floor: the
  median over repeats of each update's time against the matmul rate measured just before it (a drifting
  machine's speed cancels out). update / bf16 floor: the same against the bf16 matmul rate, the floor if every
  FLOP ran in bf16 (with --bf16-chain only the chain that draws a' does).
- precision bf16: --bf16-chain (the TD target's a' drawn on a bf16 copy of the critic); acting stays fp32.
- env steps/s: the real training loop (`train()`) on --env-id, the authors' protocol (5 envs, one update per
  vector step), read off its progress lines once learning has started (steady state).
- --cleanrl-sac: runs CleanRL's SAC (one update per env step) in the same invocation, on the same env, between
  every two of our env steps/s runs: SAC, ours, SAC, ours, ..., SAC, for --sps-rounds rounds. Each of our figures
  is divided by the mean of the two SAC runs directly beside it; the table shows the median over rounds. CleanRL is
  not part of this repo: give its script and the python that has its requirements (stable-baselines3). Its local
  fixes for gymnasium 1.x: SAME_STEP autoreset with `final_obs` for its `final_observation`, and, outside the
  cleanrl repo, `cleanrl_utils.buffers.ReplayBuffer` taken from stable_baselines3.common.buffers.
"""
import argparse
import contextlib
import dataclasses
import functools
import io
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import lql_continuous_action as lql  # noqa: E402
import nclql_continuous_action as nclql  # noqa: E402

SCRIPTS = {"nclql": nclql, "lql": lql}
PROGRESS = re.compile(r"^step +([\d,]+)/[\d,]+ \| SPS +([\d.]+) \| updates ([\d,]+)", re.M)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_s(fn, device):
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median_ms(fn, device, repeats):
    fn(), fn()  # warm-up (and, on the fast path, compilation)
    return 1e3 * statistics.median(timed_s(fn, device) for _ in range(repeats))


def update_against_matmul(update, device, repeats, flops, dtype=torch.float32):
    """Median update ms, and its median ratio to the FLOP floor with the `dtype` matmul rate measured right before
    each update: this machine's speed drifts by up to 30% over minutes, so each update is set against its moment."""
    a, b = torch.randn(2048, 2048, device=device, dtype=dtype), torch.randn(2048, 2048, device=device, dtype=dtype)
    update(), update()
    times, ratios = [], []
    for _ in range(repeats):
        gflops = 2 * 2048**3 / min(timed_s(lambda: a @ b, device) for _ in range(3)) / 1e9
        times.append(timed_s(update, device))
        ratios.append(times[-1] / (flops / (gflops * 1e9)))
    return 1e3 * statistics.median(times), statistics.median(ratios)


def matmul_gflops(device, dtype=torch.float32):
    a, b = torch.randn(2048, 2048, device=device, dtype=dtype), torch.randn(2048, 2048, device=device, dtype=dtype)
    ms = median_ms(lambda: a @ b, device, 10)
    return 2 * 2048**3 / (ms * 1e-3) / 1e9


class CountFlops(TorchDispatchMode):
    """FLOPs of every op torch's flop counter knows (matmuls), without its module hooks: FlopCounterMode's hooks on
    the critic's inputs fail inside the chain's torch.autograd.grad."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func._overloadpacket in flop_registry:
            self.flops += flop_registry[func._overloadpacket](*args, **kwargs, out_val=out)
        return out


def update_flops(script, device, batch):
    """Matmul FLOPs of one update as torch counts them (`torch.utils.flop_counter`): every matmul an eager update
    runs, backward passes included, at the shapes it runs them (figures: tests/benchmarks/README.md)."""
    obs_dim, act_dim = batch[0].shape[1], batch[1].shape[1]
    args, critic, critic_target, optimizer, policy, chain_critic = make_parts(script, device, False, False, obs_dim,
                                                                              act_dim)
    with CountFlops() as counter:
        script.update_critic(batch, critic, critic_target, optimizer, policy, args, chain_critic)
    return counter.flops


def make_parts(script, device, compiled, bf16, obs_dim, act_dim, **overrides):
    """The update's pieces, built as train() builds them, fast path included; overrides go to the script's Args."""
    args = script.Args(compile=compiled, bf16_chain=bf16, cuda=device.type == "cuda", **overrides)
    critic = script.make_critic(args, obs_dim, act_dim)
    critic_target = script.make_critic(args, obs_dim, act_dim).requires_grad_(False)
    optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate, fused=True)
    policy, chain_critic = script.fast_path(args, critic, critic_target, optimizer)
    return args, critic, critic_target, optimizer, policy, chain_critic


def has_bf16_matmul(device) -> bool:
    """bf16 matmul in hardware (the scripts' own test for --bf16-chain); elsewhere it runs in software, far slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def time_update_and_act(script, device, compiled, bf16, cli):
    obs_dim, act_dim = cli.obs_dim, cli.act_dim
    args, critic, critic_target, optimizer, policy, chain_critic = make_parts(script, device, compiled, bf16, obs_dim,
                                                                              act_dim)
    b = cli.batch_size
    batch = (torch.randn(b, obs_dim, device=device), torch.rand(b, act_dim, device=device) * 2 - 1,
             torch.randn(b, device=device), torch.randn(b, obs_dim, device=device), torch.zeros(b, device=device))
    states = torch.randn(cli.num_envs, obs_dim, device=device)
    start = time.perf_counter()

    def update():
        script.update_critic(batch, critic, critic_target, optimizer, policy, args, chain_critic)

    def act():
        with torch.no_grad():
            policy(critic, states, args)

    update(), act()
    first_call_s = time.perf_counter() - start
    flops = update_flops(script, device, batch)
    update_ms, floor_ratio = update_against_matmul(update, device, cli.repeats, flops)
    bf16_floor_ratio = float("nan")  # n/a without bf16 hardware: a software bf16 matmul is no floor
    if has_bf16_matmul(device):
        _, bf16_floor_ratio = update_against_matmul(update, device, max(3, cli.repeats // 4), flops, torch.bfloat16)
    act_ms = median_ms(act, device, cli.repeats)
    probe = torch.randn(args.sampler_probe_states, obs_dim, device=device)
    start = time.perf_counter()
    script.sampler_statistics(critic, probe, args)
    stats_first_s = time.perf_counter() - start
    stats_ms = median_ms(lambda: script.sampler_statistics(critic, probe, args), device, max(3, cli.repeats // 4))
    stats_share = stats_ms / (args.sampler_stats_interval * (update_ms + act_ms))
    w = torch.tensor(args.w, dtype=torch.float64, device=device)
    tune_args = dataclasses.replace(args, w_lr=0.0)  # w stays put: the time of a step, not where w goes
    tune = functools.partial(script.tune_w, w, functools.partial(policy, w=w))  # as train() calls it:
    tune(chain_critic, probe, tune_args)  # on the TD target's chain critic; the first call compiles
    tune_ms = median_ms(lambda: tune(chain_critic, probe, tune_args), device, max(3, cli.repeats // 4))
    tune_share = tune_ms / (args.w_tune_interval * (update_ms + act_ms))
    return (update_ms, act_ms, first_call_s, flops, floor_ratio, bf16_floor_ratio, stats_ms, stats_first_s, stats_share,
            tune_ms, tune_share)


def training_sps(script, device, compiled, bf16, cli, **overrides):
    """Steady-state env steps/s of the real loop: the median SPS of progress intervals that start after learning."""
    args = script.Args(env_id=cli.env_id, num_envs=cli.num_envs, learning_starts=cli.sps_learning_starts,
                       total_timesteps=cli.sps_updates * cli.num_envs, compile=compiled, bf16_chain=bf16,
                       cuda=device.type == "cuda", eval_frequency=10**9, eval_episodes=cli.num_envs,
                       log_interval_s=cli.sps_interval_s, save_model=False, exp_name="bench_speed", **overrides)
    out, cwd = io.StringIO(), os.getcwd()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(out):
        os.chdir(tmp)  # runs/ goes to a temporary folder
        try:
            script.train(args)
        finally:
            os.chdir(cwd)
    lines = [(int(u.replace(",", "")), float(sps)) for _, sps, u in PROGRESS.findall(out.getvalue())]
    steady = [sps for (prev_updates, _), (_, sps) in zip(lines, lines[1:]) if prev_updates > 0]
    return statistics.median(steady) if steady else float("nan")


def cleanrl_sac_sps(cli):
    """CleanRL SAC's steady-state env steps/s, from its 'SPS:' prints (cumulative since start) after learning."""
    learning_starts, extra = 5000, 3000
    command = [cli.cleanrl_python, cli.cleanrl_sac, "--env-id", cli.env_id, "--total-timesteps",
               str(learning_starts + extra), "--learning-starts", str(learning_starts), "--seed", "1"]
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"CleanRL SAC failed:\n{result.stderr[-2000:]}")
    sps = [int(x) for x in re.findall(r"^SPS: (\d+)", result.stdout, re.M)]
    steps = [learning_starts + 1 + 100 * (i + 1) for i in range(len(sps))]  # it prints at every 100th update
    times = [step / s for step, s in zip(steps, sps)]
    return (steps[-1] - steps[0]) / (times[-1] - times[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scripts", nargs="+", default=["nclql", "lql"], choices=list(SCRIPTS))
    parser.add_argument("--paths", nargs="+", default=["eager", "compile"], choices=["eager", "compile"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                        help="bf16: --bf16-chain (needs bf16 matmul in hardware)")
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--env-id", default="Hopper-v4")
    parser.add_argument("--obs-dim", type=int, default=11, help="Hopper-v4's")
    parser.add_argument("--act-dim", type=int, default=3, help="Hopper-v4's")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-envs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--sps", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure env steps/s of the real training loop")
    parser.add_argument("--sps-learning-starts", type=int, default=1000)
    parser.add_argument("--sps-updates", type=int, default=400)
    parser.add_argument("--sps-interval-s", type=float, default=5.0)
    parser.add_argument("--sps-rounds", type=int, default=1,
                        help="rounds of env steps/s runs; with --cleanrl-sac, a SAC run sits between every two of ours")
    parser.add_argument("--cleanrl-sac", help="path to CleanRL's sac_continuous_action.py, to run beside ours")
    parser.add_argument("--cleanrl-python", default=sys.executable)
    cli = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {cli.batch_size}, "
          f"acting on {cli.num_envs} states, {cli.env_id}")
    rows = []
    for device_name in cli.devices:
        device = torch.device(device_name)
        gflops = matmul_gflops(device)
        bf16 = f"bf16 {matmul_gflops(device, torch.bfloat16):.0f} GFLOP/s" if has_bf16_matmul(device) else \
            "no bf16 matmul in hardware: the bf16 rows are skipped (the scripts refuse --bf16-chain here)"
        print(f"{device_name}: matmul (2048 x 2048) fp32 {gflops:.0f} GFLOP/s, {bf16}", flush=True)
        for name in cli.scripts:
            for path in cli.paths:
                for precision in [p for p in cli.precisions if p == "fp32" or has_bf16_matmul(device)]:
                    (update_ms, act_ms, first_s, flops, ratio, bf16_ratio, stats_ms, stats_first_s, stats_share,
                     tune_ms, tune_share) = time_update_and_act(SCRIPTS[name], device, path == "compile",
                                                                precision == "bf16", cli)
                    floor_ms = flops / (gflops * 1e9) * 1e3  # at the rate measured at the start, for the table
                    rows.append({"name": name, "path": path, "precision": precision, "device": device,
                                 "update_ms": update_ms, "act_ms": act_ms, "gflop": flops / 1e9, "floor_ms": floor_ms,
                                 "ratio": ratio, "bf16_ratio": bf16_ratio, "first_s": first_s, "sps": [], "vs_sac": []})
                    print(f"  {name} {path} {precision} {device_name}: update {update_ms:.1f} ms, act {act_ms:.1f} ms, "
                          f"sampler_statistics {stats_ms:.0f} ms (first call {stats_first_s:.1f} s): "
                          f"{100 * stats_share:.2f}% of the updates and acts between two; tune_w {tune_ms:.0f} ms: "
                          f"{100 * tune_share:.2f}% of those between two", flush=True)

    # env steps/s, in rounds: SAC, one of ours, SAC, the next of ours, ..., SAC. This machine's speed drifts by up to
    # 30% over minutes, so each of our figures is set against the mean of the two SAC runs directly beside it.
    sac = []
    if cli.sps:
        if cli.cleanrl_sac:
            sac.append(cleanrl_sac_sps(cli))
            print(f"CleanRL SAC {sac[-1]:.1f} env steps/s", flush=True)
        for round_index in range(cli.sps_rounds):
            for row in rows:
                row["sps"].append(training_sps(SCRIPTS[row["name"]], row["device"], row["path"] == "compile",
                                               row["precision"] == "bf16", cli))
                print(f"round {round_index + 1}: {row['name']} {row['path']} {row['precision']} {row['device'].type} "
                      f"{row['sps'][-1]:.1f} env steps/s", flush=True)
                if cli.cleanrl_sac:
                    sac.append(cleanrl_sac_sps(cli))
                    row["vs_sac"].append(row["sps"][-1] / ((sac[-2] + sac[-1]) / 2))
                    print(f"CleanRL SAC {sac[-1]:.1f} env steps/s (ours: {row['vs_sac'][-1]:.2f}x the SAC runs "
                          f"beside it)", flush=True)

    def median(values):
        return statistics.median(values) if values else float("nan")

    print("\n| script | path | precision | device | update ms | act ms | update GFLOP | floor ms | update / floor | "
          "update / bf16 floor | first call s | env steps/s | vs CleanRL SAC |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        vs_sac = f"{median(row['vs_sac']):.2f}x" if row["vs_sac"] else "n/a"  # n/a: run without --cleanrl-sac
        bf16_ratio = "n/a" if math.isnan(row["bf16_ratio"]) else f"{row['bf16_ratio']:.2f}x"  # n/a: no bf16 hardware
        print(f"| {row['name']} | {row['path']} | {row['precision']} | {row['device'].type} | {row['update_ms']:.1f} | "
              f"{row['act_ms']:.1f} | {row['gflop']:.2f} | {row['floor_ms']:.1f} | {row['ratio']:.2f}x | "
              f"{bf16_ratio} | {row['first_s']:.0f} | {median(row['sps']):.1f} | {vs_sac} |")
    if sac:
        print(f"\nCleanRL SAC, {cli.env_id}, one update per env step, steady state: "
              f"{', '.join(f'{x:.1f}' for x in sac)} env steps/s, in the order run")
        print(f"env steps/s and vs SAC are medians over {cli.sps_rounds} round(s); per round:")
        for row in rows:
            print(f"  {row['name']} {row['path']} {row['precision']} {row['device'].type}: "
                  f"{', '.join(f'{x:.1f}' for x in row['sps'])} env steps/s = "
                  f"{', '.join(f'{x:.2f}x' for x in row['vs_sac'])} SAC")


if __name__ == "__main__":
    main()
