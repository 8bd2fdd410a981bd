"""Claims about the shell both scripts share: the command line, the env loop, evaluation, logs, checkpoints.

Every test runs once per script (the `script` fixture in conftest.py).
"""
import dataclasses
import glob
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.conftest import ROOT

TINY = ["--env-id", "tests.fake_envs:Counter-v0", "--num-envs", "2", "--eval-episodes", "2"]


def script_path(script):
    return os.path.join(ROOT, os.path.basename(script.__file__))


@pytest.mark.parametrize("argv, expected", [
    (["--env-id", "NoSuchEnv-v0"], "cannot make env 'NoSuchEnv-v0'"),
    (["--env-id", "CartPole-v1"], "Discrete action space"),
    (["--env-id", "tests.fake_envs:UnboundedAction-v0"], "unbounded action bounds"),
    (["--env-id", "tests.fake_envs:ImageObservation-v0"], "flat vector observations"),
    (["--batch-size", "512", "--buffer-size", "256"], "cannot exceed --buffer-size"),
    (["--num-envs", "0"], "--num-envs must be positive"),
    (["--total-timesteps", "-5"], "--total-timesteps must be positive"),
    (["--learning-starts", "-1"], "--learning-starts must be >= 0"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--eval-seed", "-1"], "--eval-seed must be >= 0"),
    (["--w", "0"], "--w must be positive"),
    (["--w", "-1"], "--w must be positive"),
    (["--eval-episodes", "0"], "--eval-episodes must be positive"),
    (["--gamma", "1.5"], "need 0 <= --gamma <= 1"),
    (["--capture-video"], "pip install moviepy"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(script, argv, expected, tmp_path, monkeypatch, capsys):
    if "--capture-video" in argv and __import__("importlib").util.find_spec("moviepy"):
        pytest.skip("moviepy is installed here, so --capture-video is valid input")
    monkeypatch.chdir(tmp_path)
    code = script.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, f"exit code {code}, stderr {err!r}"
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err
    assert not os.path.exists(tmp_path / "runs"), "bad input must not create runs/"


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_every_non_finite_float_option_is_refused_by_name(script, value, tmp_path, monkeypatch, capsys):
    """inf and nan pass or dodge the range checks (every comparison with nan is False): refuse them first, for every
    float option, with the option's name; e.g. --learning-rate inf used to run the whole warm-up first."""
    monkeypatch.chdir(tmp_path)
    float_options = [f.name for f in dataclasses.fields(script.Args) if f.type is float]
    assert {"learning_rate", "w", "gamma"} <= set(float_options), float_options
    for name in float_options:
        option = f"--{name.replace('_', '-')}"
        code = script.main([option, value])
        err = capsys.readouterr().err.strip()
        assert code == 2, f"{option} {value}: exit code {code}, stderr {err!r}"
        assert len(err.splitlines()) == 1 and err.startswith(f"error: {option} is not a finite number"), err
        assert not os.path.exists(tmp_path / "runs"), f"{option} {value} created runs/"


def test_compile_without_a_cpp_compiler_stops_before_anything_starts(script, tmp_path, monkeypatch, capsys):
    """On CPU, --compile's kernels are built by g++: without one the run must stop at once, not after the warm-up."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(script.shutil, "which", lambda name: None)
    code = script.main(TINY + ["--compile", "--no-cuda"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "needs a C++ compiler" in err, (code, err)
    assert not os.path.exists(tmp_path / "runs")


def test_bf16_chain_without_bf16_hardware_stops_before_anything_starts(script, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    code = script.main(TINY + ["--bf16-chain", "--no-cuda"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--bf16-chain needs bf16 matmul" in err, (code, err)
    assert not os.path.exists(tmp_path / "runs")


def test_bad_input_through_a_real_command_line(script, tmp_path):
    """The same contract for a user at a shell: one line on stderr, exit code 2, no traceback, no runs/."""
    result = subprocess.run([sys.executable, script_path(script), "--env-id", "Pendulum-v99"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: cannot make env") and "Traceback" not in result.stderr, result.stderr
    assert not os.path.exists(tmp_path / "runs")


def test_truncation_keeps_the_final_observation_and_no_transition_spans_a_reset(script, tmp_path, monkeypatch):
    """Counter env: obs[0] counts steps since reset; half the episodes terminate at 4, the others are truncated
    by the 6-step time limit. Every stored transition must satisfy next_obs[0] == obs[0] + 1, a truncated one
    must keep its true final obs (t = 6, not the reset obs t = 0) with terminated = 0."""
    monkeypatch.chdir(tmp_path)
    # 100 random vector steps, then the one learning vector step (and update) that the shortest run makes.
    args = script.Args(env_id="tests.fake_envs:Counter-v0", num_envs=3, total_timesteps=1, learning_starts=300,
                       eval_episodes=2, batch_size=16, save_model=False)
    summary = script.train(args)
    rb = summary["replay_buffer"]
    obs, next_obs, terminated = (x[: rb.size].numpy() for x in (rb.obs, rb.next_obs, rb.terminated))
    assert rb.size == 303
    steps_apart = next_obs[:, 0] - obs[:, 0]
    assert np.all(steps_apart == 1), f"{np.sum(steps_apart != 1)} transitions span a reset"
    truncated = next_obs[:, 0] == 6
    true_terminal = (next_obs[:, 0] == 4) & (obs[:, 1] == 1)
    assert truncated.sum() > 5 and true_terminal.sum() > 5, (truncated.sum(), true_terminal.sum())
    assert np.all(terminated[truncated] == 0), "a time-limit truncation was stored as terminal"
    assert np.array_equal(terminated == 1, true_terminal), "terminated must flag exactly the true terminals"


def test_non_finite_loss_stops_with_exit_1_and_names_the_last_good_checkpoint(script, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # Rewards turn NaN at the 11th learning vector step; losses are read at updates 1, 101, ...
    args = script.Args(env_id="tests.fake_envs:LateNaNReward-v0", num_envs=2, total_timesteps=400, learning_starts=40,
                       eval_frequency=20, eval_episodes=2, batch_size=16)
    summary = script.train(args)
    err = capsys.readouterr().err
    assert summary["exit_code"] == 1, summary
    assert "non-finite loss" in err and "Last good checkpoint: runs/" in err, err
    assert summary["checkpoint"] and os.path.exists(summary["checkpoint"])
    assert glob.glob("runs/*/checkpoint_nonfinite.pt"), "the diverged state is saved beside the last good one"
    # Evaluations (and checkpoints) every 10 updates; the last before the check at update 101 is after update 100,
    # at env step 40 + 100 * 2.
    assert summary["num_updates"] == 101, summary["num_updates"]
    assert torch.load(summary["checkpoint"], weights_only=True)["global_step"] == 240


def test_hopper_end_to_end_through_the_command_line(script, tmp_path):
    """A user's run, shortened: 100+ gradient updates, an evaluation, a tensorboard file and a checkpoint."""
    result = subprocess.run(
        [sys.executable, script_path(script), "--env-id", "Hopper-v4", "--total-timesteps", "500",
         "--learning-starts", "500", "--eval-frequency", "500", "--eval-episodes", "2", "--log-interval-s", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    eval_lines = [line for line in result.stdout.splitlines() if line.startswith("eval")]
    assert len(eval_lines) == 1 and "step     1,000" in eval_lines[0] and "after 100 updates" in eval_lines[0], \
        result.stdout
    progress = [line for line in result.stdout.splitlines() if line.startswith("step")]
    assert progress and "updates" in progress[-1] and "ETA" in progress[-1], result.stdout
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "Hopper-v4__*"))
    assert glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
    checkpoint = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)
    assert checkpoint["global_step"] == 1005 and checkpoint["args"]["env_id"] == "Hopper-v4"
    assert set(checkpoint) == {"algorithm", "args", "critic", "critic_target", "optimizer", "global_step",
                               "learning_step", "num_updates", "last_eval_step", "eval_returns", "rng", "replay_buffer"}
    assert checkpoint["replay_buffer"] is None  # --save-buffer is off by default
    # One update per vector step after the warm-up, from env step 505 to 1005 with 5 envs (the authors' `<=`): 101
    # updates, each one Adam step per loss
    # (NC-LQL: TD and smoothing; LQL: TD).
    adam_steps = checkpoint["optimizer"]["state"][0]["step"].item()
    assert adam_steps == 101 * (2 if hasattr(script, "sigma_schedule") else 1), adam_steps


def test_logged_scalars(script, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    args = script.Args(env_id="tests.fake_envs:Counter-v0", num_envs=2, total_timesteps=40, learning_starts=40,
                       eval_frequency=20, eval_episodes=2, batch_size=16)
    summary = script.train(args)
    assert summary["exit_code"] == 0 and summary["num_updates"] == 21  # at steps 42, 44, ..., 82
    assert [step for step, _ in summary["eval_returns"]] == [60, 80]
    events = EventAccumulator(summary["run_dir"]).Reload()
    expected = {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "eval/episodic_return",
                "losses/td_loss", "values/q"}
    if hasattr(script, "sigma_schedule"):  # NC-LQL
        expected.add("losses/smoothing_loss")
    missing = expected - set(events.Tags()["scalars"])
    assert not missing, f"not logged: {missing}"
    assert "hyperparameters/text_summary" in events.Tags()["tensors"]


@pytest.mark.parametrize("total_timesteps, env_steps, num_updates, eval_updates", [
    (40, 64, 11, [4, 8, 10]),  # 40 is off the every-16 schedule: one more evaluation on reaching it
    (32, 56, 9, [4, 8]),  # like the defaults: the last scheduled evaluation, then the authors' extra vector step
])
def test_steps_updates_and_evaluations_are_counted_as_the_authors_count(script, total_timesteps, env_steps,
                                                                          num_updates, eval_updates, tmp_path,
                                                                          monkeypatch, capsys):
    """The authors' loop, with learning_starts = 20, num_envs = 4, eval_frequency = 16: 5 random vector steps
    (20 env steps), then act, step and update while learning_step (env steps after the warm-up) <= total_timesteps,
    i.e. total_timesteps // 4 + 1 updates; evaluate when learning_step is 16 past the last evaluation (updates 4, 8,
    never at learning step 0). Their total 40 gives 64 env steps, 11 updates, evaluations at updates 4 and 8;
    this project adds one at update 10, on reaching total_timesteps, since 40 is off the schedule."""
    monkeypatch.chdir(tmp_path)
    args = script.Args(env_id="tests.fake_envs:Counter-v0", num_envs=4, learning_starts=20,
                       total_timesteps=total_timesteps, eval_frequency=16, eval_episodes=2, batch_size=16,
                       log_interval_s=1e-9, save_model=False)
    summary = script.train(args)
    out = capsys.readouterr().out
    assert summary["exit_code"] == 0
    assert summary["global_step"] == summary["replay_buffer"].size == env_steps, summary["global_step"]
    assert summary["num_updates"] == num_updates, summary["num_updates"]
    # The x-axis counts all env steps: the warm-up's 20, then 4 per update.
    assert [step for step, _ in summary["eval_returns"]] == [20 + 4 * u for u in eval_updates], summary["eval_returns"]
    eval_lines = [line for line in out.splitlines() if line.startswith("eval")]
    assert [int(re.search(r"after ([\d,]+) updates", line).group(1)) for line in eval_lines] == eval_updates, out
    last_progress = [line for line in out.splitlines() if line.startswith("step")][-1]
    assert re.match(rf"step +{env_steps}/{env_steps} \| .* \| updates {num_updates} \|", last_progress), last_progress


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_ctrl_c_or_kill_saves_a_checkpoint(script, stop_signal, tmp_path):
    process = subprocess.Popen([sys.executable, script_path(script), *TINY, "--total-timesteps", "100000000",
                                "--learning-starts", "20", "--batch-size", "16", "--log-interval-s", "0.2"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and "updates" not in (line := process.stdout.readline()):
        assert line or process.poll() is None, process.stderr.read()
    process.send_signal(stop_signal)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted at step" in err and "checkpoint: runs/" in err, err
    (path,) = glob.glob(str(tmp_path / "runs" / "*" / "checkpoint.pt"))
    stopped_at = int(re.search(r"interrupted at step ([\d,]+)", err).group(1).replace(",", ""))
    assert torch.load(path, weights_only=True)["global_step"] == stopped_at >= 20, err


def test_actions_are_rescaled_from_unit_box_to_env_bounds(script):
    env = script.make_env("Humanoid-v4", seed=0, idx=0, capture_video=False, run_name="unused")()
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    inner_bounds = env.unwrapped.action_space.high
    assert np.allclose(inner_bounds, 0.4)  # Humanoid's true bounds are +-0.4
    assert np.allclose(env.action(np.ones(env.action_space.shape, np.float32)), inner_bounds)
    env.close()
