"""Watch a trained agent without training one: one episode of a checkpoint's Langevin policy, rendered to a GIF.

    MUJOCO_GL=egl python tests/results/watch_agent.py runs/RUN/checkpoint.pt --out agent.gif

The checkpoint may be a run's or a critic-only one (--strip writes one: the options, the critic and the counters,
no target, Adam or buffer; a few MB). The episode is the first evaluation env's (seeded --eval-seed, the checkpoint's
by default), drawn by the script that wrote the checkpoint, with its options, on the CPU. MuJoCo renders headless
with EGL (MUJOCO_GL=egl: a GPU driver's or Mesa's libEGL) or OSMesa (MUJOCO_GL=osmesa: libosmesa6). Not collected by
pytest; it needs imageio, which gymnasium[mujoco] brings.

    python tests/results/watch_agent.py runs/RUN/checkpoint.pt --strip agent.pt   # a critic-only copy, no GIF
"""
import argparse
import dataclasses
import functools
import os
import sys

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import lql_continuous_action as lql  # noqa: E402
import nclql_continuous_action as nclql  # noqa: E402

SCRIPTS = {"lql": lql, "nclql": nclql}
CRITIC_ONLY = ("algorithm", "args", "critic", "global_step", "learning_step", "num_updates", "eval_returns", "w")


def load(path: str):
    """The script that wrote the checkpoint, its options (on the CPU, eager) and the checkpoint."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    script = SCRIPTS[checkpoint["algorithm"]]
    checkpoint = script.load_checkpoint(path)  # checks it as --eval-checkpoint does
    args = script.Args(**checkpoint["args"] | {"cuda": False, "compile": False, "bf16_chain": False,
                                               "resume": None, "eval_checkpoint": path})
    return script, args, checkpoint


def episode_frames(path: str, size: int, every: int, max_frames: int, eval_seed: int | None):
    """The frames (every `every`-th step) and the return of one episode of the checkpoint's policy."""
    script, args, checkpoint = load(path)
    args = args if eval_seed is None else dataclasses.replace(args, eval_seed=eval_seed)
    env = gym.make(args.env_id, render_mode="rgb_array", width=size, height=size)
    unit = np.ones(env.action_space.shape, dtype=np.float32)
    env = gym.wrappers.RescaleAction(env, min_action=-unit, max_action=unit)
    obs, _ = env.reset(seed=args.eval_seed)
    critic = script.make_critic(args, len(obs), len(unit))
    script.load_critic(critic, checkpoint["critic"], path)
    policy = script.langevin_policy
    if checkpoint.get("w") is not None:  # a run of --autotune-w acts at its tuned w, as --eval-checkpoint does
        policy = functools.partial(policy, w=script.tuned_w_tensor(checkpoint["w"], torch.device("cpu")))
    torch.manual_seed(args.eval_seed)
    frames, total, done, step = [], 0.0, False, 0
    while not done:
        if step % every == 0 and len(frames) < max_frames:
            frames.append(env.render())
        obs, reward, terminated, truncated, _ = env.step(script.act(policy, critic, obs[None], args)[0])
        total, done, step = total + reward, terminated or truncated, step + 1
    env.close()
    return frames, total, step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--out", default="agent.gif", help="the GIF to write")
    parser.add_argument("--strip", help="write a critic-only copy of the checkpoint here instead, and stop")
    parser.add_argument("--size", type=int, default=160, help="frame width and height in pixels")
    parser.add_argument("--every", type=int, default=4, help="keep every this many env steps' frame")
    parser.add_argument("--max-frames", type=int, default=250)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--eval-seed", type=int, help="the episode's seed (default: the checkpoint's --eval-seed)")
    cli = parser.parse_args()
    if cli.strip:
        checkpoint = torch.load(cli.checkpoint, map_location="cpu", weights_only=True)
        torch.save({key: checkpoint[key] for key in CRITIC_ONLY if key in checkpoint}, cli.strip)
        print(f"{cli.strip}: {os.path.getsize(cli.strip) / 2**20:.1f} MiB")
        return
    frames, total, steps = episode_frames(cli.checkpoint, cli.size, cli.every, cli.max_frames, cli.eval_seed)
    imageio.mimsave(cli.out, frames, duration=1000 / cli.fps, loop=0)
    print(f"{cli.out}: {len(frames)} frames of a {steps}-step episode, return {total:.1f}, "
          f"{os.path.getsize(cli.out) / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
