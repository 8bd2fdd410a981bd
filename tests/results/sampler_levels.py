"""What the sampler does on a trained critic, level by level (NC-LQL) or block of steps (LQL). Not collected by pytest.

    python tests/results/sampler_levels.py runs/RUN/checkpoint.pt                 # states from the saved replay buffer
    python tests/results/sampler_levels.py runs/RUN/checkpoint.pt --states 1000 --chains 16 --seed 1
    python tests/results/sampler_levels.py runs/RUN/checkpoint.pt --w 100                  # the same critic at w = 100

It runs the script's own `sampler_statistics` (what a run logs under sampler/ in TensorBoard) on --states states drawn
from the checkpoint's replay buffer, --chains chains each, and prints it as a table: after each level or block, the
mean |grad_a (Q1 + Q2)| before normalisation, the share of action coordinates on a face of the box and of actions
on a corner, the spread of a state's chains (std per dimension) and their entropy bound (nats per dimension); then
the chain's gain in min(Q1, Q2) over uniform-random actions. The chains sample at the run's w (its tuned w if it
ran with --autotune-w), or at --w. A checkpoint made before sigmas were a buffer of the critic gets them from its
options.
"""
import argparse
import dataclasses
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import lql_continuous_action as lql  # noqa: E402
import nclql_continuous_action as nclql  # noqa: E402

SCRIPTS = {"lql": lql, "nclql": nclql}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--states", type=int, default=1000, help="states drawn from the checkpoint's replay buffer")
    parser.add_argument("--chains", type=int, default=16, help="chains per state")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--w", type=float, help="sample at this w (default: the run's, tuned if it was)")
    cli = parser.parse_args()
    algorithm = torch.load(cli.checkpoint, map_location="cpu", weights_only=True).get("algorithm")
    if algorithm not in SCRIPTS:
        sys.exit(f"error: {cli.checkpoint} is not a checkpoint of either script")
    script = SCRIPTS[algorithm]
    try:
        checkpoint = script.load_checkpoint(cli.checkpoint)  # fills options added since it was written
    except script.UsageError as e:
        sys.exit(f"error: {e}")
    if not checkpoint["replay_buffer"]:
        sys.exit("error: the probe states come from the replay buffer: give a checkpoint saved with --save-buffer")
    args = dataclasses.replace(script.Args(**checkpoint["args"]), compile=False, cuda=False,
                               sampler_probe_states=cli.states, sampler_probe_chains=cli.chains,
                               w=cli.w or checkpoint.get("w") or checkpoint["args"]["w"])
    buffer_obs = checkpoint["replay_buffer"]["obs"]
    critic = script.make_critic(args, buffer_obs.shape[1], checkpoint["replay_buffer"]["actions"].shape[1])
    state = checkpoint["critic"]
    if script is nclql:
        state.setdefault("sigmas", nclql.sigma_schedule(args.sigma_max, args.sigma_min, args.num_levels))
    critic.load_state_dict(state)
    torch.manual_seed(cli.seed)
    probe = buffer_obs[torch.randint(0, len(buffer_obs), (cli.states,))]
    stats = script.sampler_statistics(critic, probe, args)

    groups = [key.split("/")[-1] for key in stats if key.startswith("sampler/on_face/")]
    print(f"{cli.checkpoint}: {algorithm}, env step {checkpoint['global_step']:,}, {cli.states} states from its replay "
          f"buffer x {cli.chains} chains, w = {args.w}, grad norm {args.q_grad_norm}\n")
    print("| after | mean grad norm | coordinates on a face | actions on a corner | spread | entropy bound |\n"
          "|---|---|---|---|---|---|")
    for group in groups:
        print(f"| {group} | {stats[f'sampler/grad_norm/{group}']:.3g} | {stats[f'sampler/on_face/{group}']:.3f} | "
              f"{stats[f'sampler/on_corner/{group}']:.3f} | {stats[f'sampler/spread/{group}']:.3f} | "
              f"{stats[f'sampler/entropy/{group}']:+.2f} |")
    print(f"\nmin(Q1, Q2) at the chain's actions minus at uniform-random actions: {stats['sampler/q_gain']:+.3f}")


if __name__ == "__main__":
    main()
