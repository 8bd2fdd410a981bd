"""What NC-LQL's annealed sampler does, level by level, on a trained critic. Not collected by pytest.

    python tests/results/sampler_levels.py runs/RUN/checkpoint.pt            # states from the saved replay buffer
    python tests/results/sampler_levels.py runs/RUN/checkpoint.pt --states 2000 --seed 1

For each noise level l it prints, after the level's T steps: sigma_l, alpha_l, the length 0.5 * alpha_l * w of a
normalised step, the share of action coordinates on a face of the box (|a_i| = 1), the share of actions on a corner
(every coordinate on a face), and the mean clean min(Q1, Q2) of the actions; then the same for uniform-random actions.
The chain is the script's own `annealed_langevin_sample`, called as `langevin_policy` calls it; this script only
watches the actions it passes to Q. A checkpoint made before sigmas were a buffer of the critic gets them from its
options.
"""
import argparse
import dataclasses
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import nclql_continuous_action as nclql  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--states", type=int, default=1000, help="states drawn from the checkpoint's replay buffer")
    parser.add_argument("--seed", type=int, default=0)
    cli = parser.parse_args()
    checkpoint = torch.load(cli.checkpoint, map_location="cpu", weights_only=True)
    if checkpoint.get("algorithm") != "nclql" or not checkpoint.get("replay_buffer"):
        sys.exit("error: needs an NC-LQL checkpoint saved with --save-buffer")
    options = {field.name for field in dataclasses.fields(nclql.Args)}  # older checkpoints hold removed options
    args = nclql.Args(**{k: v for k, v in checkpoint["args"].items() if k in options}
                      | {"compile": False, "cuda": False})
    obs_dim, act_dim = checkpoint["replay_buffer"]["obs"].shape[1], checkpoint["replay_buffer"]["actions"].shape[1]
    critic = nclql.make_critic(args, obs_dim, act_dim)
    state = checkpoint["critic"]
    state.setdefault("sigmas", nclql.sigma_schedule(args.sigma_max, args.sigma_min, args.num_levels))
    critic.load_state_dict(state)
    torch.manual_seed(cli.seed)
    buffer_obs = checkpoint["replay_buffer"]["obs"]
    obs = buffer_obs[torch.randint(0, len(buffer_obs), (cli.states,))]

    first_input = {}  # level -> the actions the chain passes to Q at that level's first step

    def q_fn(actions, level):
        first_input.setdefault(level, actions.detach().clone())
        return critic(obs, actions, torch.full((len(obs),), level)).sum(0)

    final = nclql.annealed_langevin_sample(q_fn, len(obs), act_dim, critic.sigmas, args.steps_per_level, args.step_lr,
                                           args.w, args.q_grad_norm)
    # The actions after level l are those Q sees at level l + 1's first step; after the last level, the chain's output.
    after = [first_input[level + 1] for level in range(args.num_levels - 1)] + [final]
    step_sizes = args.step_lr * (critic.sigmas / critic.sigmas[-1]) ** 2

    def row(name, actions):
        on_face = actions.abs() >= 1.0
        with torch.no_grad():
            q = critic(obs, actions).min(0).values.mean().item()
        return f"| {name} | {on_face.float().mean():.3f} | {on_face.all(-1).float().mean():.3f} | {q:.2f} |"

    print(f"{cli.checkpoint}: env step {checkpoint['global_step']:,}, {len(obs)} states from its replay buffer, "
          f"w = {args.w}, T = {args.steps_per_level}, grad norm {args.q_grad_norm}\n")
    print("| after | coordinates on a face | actions on a corner | mean clean min(Q1, Q2) |\n|---|---|---|---|")
    print(row("uniform start", first_input[0]))
    for level, actions in enumerate(after):
        sigma, alpha = critic.sigmas[level].item(), step_sizes[level].item()
        print(row(f"level {level}: sigma {sigma:.4f}, alpha {alpha:.2e}, step {0.5 * alpha * args.w:.3g}", actions))
    print(row("uniform-random actions", torch.rand_like(final) * 2 - 1))

if __name__ == "__main__":
    main()
