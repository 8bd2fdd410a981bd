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

from tests import fake_envs
from tests.conftest import ROOT, one_plain_update

TINY = ["--env-id", "tests.fake_envs:Counter-v0", "--num-envs", "2", "--eval-episodes", "2"]


def script_path(script):
    return os.path.join(ROOT, os.path.basename(script.__file__))


@pytest.mark.parametrize("argv, expected", [
    (["--env-id", "NoSuchEnv-v0"], "cannot make env 'NoSuchEnv-v0'"),
    (["--env-id", "CartPole-v1"], "needs continuous actions in a box with finite bounds"),
    (["--env-id", "tests.fake_envs:UnboundedAction-v0"], "needs continuous actions in a box with finite bounds"),
    (["--env-id", "tests.fake_envs:ImageObservation-v0"], "flat vector observations"),
    (["--batch-size", "512", "--buffer-size", "256"], "exceeds --buffer-size"),
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
    (["--sampler-probe-chains", "1"], "--sampler-probe-chains must be >= 2"),
    (["--sampler-stats-interval", "-1"], "--sampler-stats-interval must be >= 0"),
    (["--w-lr", "0.5", "--target-entropy", "-2"], "--target-entropy, --w-lr act only with --autotune-w"),
    (["--autotune-w", "--target-entropy", "2"], "--target-entropy 2.0 cannot be reached"),
    (["--autotune-w", "--w", "2000"], "must lie within --w-bounds (1.0, 1000.0)"),
    (["--autotune-w", "--w-bounds", "100", "10"], "--w-bounds must be two finite numbers 0 < MIN <= MAX"),
    # sizes no machine has (Humanoid's 376-D observations: 3 TB of replay buffer; 12 TB of envs)
    (["--env-id", "Humanoid-v4", "--buffer-size", "1000000000"], "GiB for the replay buffer (376-D observations)"),
    (["--eval-episodes", "10000000"], "MiB an env, more than the"),
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



def test_a_run_that_cannot_fit_in_memory_is_refused_with_the_sizes(script, tmp_path, monkeypatch, capsys):
    """The replay buffer is checked against the memory the system can still give before anything is allocated: the
    default Hopper buffer (108 MB) does not fit in 64 MiB; where the memory cannot be read, nothing is refused."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(script, "available_memory", lambda: 64 * 2**20)
    code = script.main(["--env-id", "Hopper-v4", "--no-cuda"])  # the CPU's memory: on a GPU the buffer lives there
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, (code, err)
    assert "--buffer-size 1,000,000 needs 103 MiB" in err and "than the 64 MiB of cpu memory available" in err, err
    assert not os.path.exists(tmp_path / "runs")
    monkeypatch.setattr(script, "available_memory", lambda: None)
    script.check_memory(script.Args(buffer_size=10**12, cuda=False), 11, 3)  # unknown memory: no refusal

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
    assert code == 2 and len(err.splitlines()) == 1 and "needs g++ on PATH" in err, (code, err)
    assert not os.path.exists(tmp_path / "runs")


def test_bf16_chain_without_bf16_hardware_stops_before_anything_starts(script, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    code = script.main(TINY + ["--bf16-chain", "--no-cuda"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--bf16-chain needs bf16 matmul" in err, (code, err)
    assert not os.path.exists(tmp_path / "runs")


def test_bad_input_through_a_real_command_line_is_one_line_without_a_traceback(script, tmp_path):
    """The same contract for a user at a shell: one line on stderr, exit code 2, no traceback, no runs/."""
    result = subprocess.run([sys.executable, script_path(script), "--env-id", "Pendulum-v99"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: cannot make env") and "Traceback" not in result.stderr, result.stderr
    assert not os.path.exists(tmp_path / "runs")


def assert_each_transition_is_one_real_step(obs, next_obs, terminated):
    """Counter env transitions (obs[0] = t since reset, obs[1] = will_terminate): each is one step, t -> t + 1,
    never across a reset; a truncated one (t + 1 = TIME_LIMIT) keeps its true final obs, not the reset obs (t = 0),
    and is stored with terminated = 0; terminated = 1 flags exactly the true terminals (t + 1 = terminal_step with
    will_terminate)."""
    steps_apart = next_obs[:, 0] - obs[:, 0]
    assert np.all(steps_apart == 1), f"{np.sum(steps_apart != 1)} of {len(obs)} transitions span a reset"
    truncated = next_obs[:, 0] == fake_envs.TIME_LIMIT
    true_terminal = (next_obs[:, 0] == fake_envs.CounterEnv.terminal_step) & (obs[:, 1] == 1)
    assert truncated.sum() > 5 and true_terminal.sum() > 5, \
        f"too few to test: {truncated.sum()} truncations, {true_terminal.sum()} terminations"
    assert np.all(terminated[truncated] == 0), \
        f"{np.sum(terminated[truncated] != 0)} of {truncated.sum()} time-limit truncations were stored as terminal"
    wrong = np.sum((terminated == 1) != true_terminal)
    assert wrong == 0, f"terminated flags {wrong} transitions wrongly ({true_terminal.sum()} true terminals)"


def test_a_truncated_transition_keeps_its_final_obs_and_only_a_termination_stops_bootstrapping(script):
    """The env loop's pieces, as train() uses them: the SAME_STEP vector env, real_next_obs, the replay buffer."""
    num_envs, num_steps = 3, 100
    envs = script.make_vector_env("tests.fake_envs:Counter-v0", num_envs=num_envs, seed=0, capture_video=False,
                                  run_name="unused")
    rb = script.ReplayBuffer(capacity=num_envs * num_steps, obs_dim=2, act_dim=1, device=torch.device("cpu"))
    obs, _ = envs.reset(seed=0)
    finishes = {"terminated": 0, "truncated": 0}
    for _ in range(num_steps):
        actions = envs.action_space.sample()
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        finished = terminations | truncations
        # SAME_STEP autoreset: a finished env already shows its reset obs; only real_next_obs recovers the last one.
        assert np.all(next_obs[finished, 0] == 0), f"finished envs show {next_obs[finished]}, not their reset obs"
        rb.add(obs, script.real_next_obs(next_obs, infos), actions, rewards, terminations)
        finishes["terminated"] += terminations.sum()
        finishes["truncated"] += (truncations & ~terminations).sum()
        obs = next_obs
    envs.close()
    assert rb.size == num_envs * num_steps, f"{rb.size} transitions stored"
    obs, next_obs, terminated = (getattr(rb, name).numpy() for name in ("obs", "next_obs", "terminated"))
    assert_each_transition_is_one_real_step(obs, next_obs, terminated)
    stored_finishes = {"terminated": terminated.sum(), "truncated": np.sum(next_obs[:, 0] == fake_envs.TIME_LIMIT)}
    assert stored_finishes == finishes, f"stored {stored_finishes}, the envs reported {finishes}"
    # The update unpacks a sample as (obs, actions, rewards, next_obs, terminated): each flag goes with its own obs.
    obs, actions, rewards, next_obs, terminated = (x.numpy() for x in rb.sample(batch_size=1000))
    sampled_terminals = (next_obs[:, 0] == fake_envs.CounterEnv.terminal_step) & (obs[:, 1] == 1)
    wrong = np.sum((terminated == 1) != sampled_terminals)
    assert wrong == 0 and np.all(rewards == 1), f"{wrong} of 1000 sampled flags belong to another transition"


def test_a_run_stores_each_transition_it_makes_with_its_real_next_obs(script, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # 100 random vector steps, then the one learning vector step (and update) that the shortest run makes.
    args = script.Args(env_id="tests.fake_envs:Counter-v0", num_envs=3, total_timesteps=1, learning_starts=300,
                       eval_episodes=2, batch_size=16, save_buffer=True, sampler_stats_interval=0)
    summary = script.train(args)
    assert summary["exit_code"] == 0 and summary["global_step"] == 303, summary
    stored = torch.load(summary["checkpoint"], weights_only=True)["replay_buffer"]
    assert stored["size"] == 303, f"{stored['size']} transitions stored in 303 env steps"
    assert_each_transition_is_one_real_step(*(stored[name].numpy() for name in ("obs", "next_obs", "terminated")))


def test_non_finite_loss_stops_with_exit_1_and_names_the_last_good_checkpoint(script, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # Rewards turn NaN at the 11th learning vector step. Losses are read every 100 updates and before each checkpoint:
    # evaluations (and checkpoints) come every 10 updates, so the check before the one at update 20 stops the run.
    args = script.Args(env_id="tests.fake_envs:LateNaNReward-v0", num_envs=2, total_timesteps=400, learning_starts=40,
                       eval_frequency=20, eval_episodes=2, batch_size=16, sampler_stats_interval=0)
    summary = script.train(args)
    err = capsys.readouterr().err
    assert summary["exit_code"] == 1, summary
    assert "non-finite loss" in err and "Last good checkpoint: runs/" in err, err
    assert summary["checkpoint"] and os.path.exists(summary["checkpoint"]), summary["checkpoint"]
    (diverged,) = glob.glob("runs/*/checkpoint_nonfinite.pt")  # the diverged state, beside the last good one
    assert summary["num_updates"] == 20, f"stopped after {summary['num_updates']} updates"
    last_good = torch.load(summary["checkpoint"], weights_only=True)
    assert last_good["global_step"] == 40 + 10 * 2, \
        f"the last good checkpoint is at env step {last_good['global_step']}"
    assert all(torch.isfinite(p).all() for p in last_good["critic"].values()), "the last good checkpoint holds NaN"
    stopped_at = torch.load(diverged, weights_only=True)["num_updates"]
    assert stopped_at == 20, f"the diverged checkpoint holds {stopped_at} updates"


def test_a_stop_after_the_critic_went_non_finite_keeps_the_last_good_checkpoint(script, tmp_path, monkeypatch, capsys):
    """Losses are read every 100 updates and before each evaluation; a stop between two reads must not write the
    critic over the last good checkpoint once it has gone non-finite."""
    monkeypatch.chdir(tmp_path)
    real_update, num_updates = script.update_critic, []

    def update_then_stop(*args):
        metrics = real_update(*args)
        num_updates.append(1)
        if len(num_updates) == 19:  # rewards are NaN from update 11 on; the checkpoint of update 10 is good
            os.kill(os.getpid(), signal.SIGTERM)
        return metrics

    monkeypatch.setattr(script, "update_critic", update_then_stop)
    args = script.Args(env_id="tests.fake_envs:LateNaNReward-v0", num_envs=2, total_timesteps=400, learning_starts=40,
                       eval_frequency=20, eval_episodes=2, batch_size=16, sampler_stats_interval=0)
    summary = script.train(args)
    err = capsys.readouterr().err
    last_good = torch.load(summary["checkpoint"], weights_only=True)
    assert last_good["num_updates"] == 10 and all(torch.isfinite(p).all() for p in last_good["critic"].values()), \
        f"checkpoint.pt holds {last_good['num_updates']} updates (10 expected, all finite)"
    assert summary["exit_code"] == 130 and "warning: non-finite critic" in err, err
    (diverged,) = glob.glob("runs/*/checkpoint_nonfinite.pt")
    diverged = torch.load(diverged, weights_only=True)
    assert diverged["num_updates"] == 19 and not all(torch.isfinite(p).all() for p in diverged["critic"].values())


def test_a_hopper_run_from_the_command_line_updates_evaluates_logs_and_saves(script, tmp_path):
    """A user's run, shortened: 100+ gradient updates (on batches of 64: 2x faster), an evaluation, a tensorboard file
    and a checkpoint."""
    result = subprocess.run(
        [sys.executable, script_path(script), "--env-id", "Hopper-v4", "--total-timesteps", "500",
         "--learning-starts", "500", "--eval-frequency", "500", "--eval-episodes", "2", "--log-interval-s", "2",
         "--batch-size", "64"],
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
                               "learning_step", "num_updates", "last_eval_step", "eval_returns", "sampler_probe", "w",
                               "rng", "replay_buffer"}
    assert checkpoint["w"] is None, "w is saved only when --autotune-w tunes it"
    assert checkpoint["replay_buffer"] is None  # --save-buffer is off by default
    # One update per vector step after the warm-up, from env step 505 to 1005 with 5 envs (the authors' `<=`): 101
    # updates, each with as many Adam steps as one update_critic call takes (one per loss).
    _, adam_steps_per_update = one_plain_update(script, script.Args(cuda=False))
    adam_steps = {state["step"].item() for state in checkpoint["optimizer"]["state"].values()}
    assert checkpoint["num_updates"] == 101, f"{checkpoint['num_updates']} updates"
    assert adam_steps == {101 * adam_steps_per_update}, \
        f"Adam steps {adam_steps} after 101 updates of {adam_steps_per_update} steps each"


def test_the_eta_comes_from_the_average_rate_not_from_a_line_an_evaluation_slowed(script, capsys):
    """An Ant run's line after its evaluation read "SPS 18.9 ... ETA 13:58:49" at 187 env steps/s on average."""
    warmup_end = (time.time() - 50_000 / 190.0, 30_000)  # (time, env step): 190 env steps/s since then
    run = script.Progress(global_step=80_000, num_updates=10_000)
    last_line = (time.time() - 10.0, 80_000 - 189)  # 189 env steps in the last 10 s, an evaluation among them
    script.print_progress(run, 1_030_005, last_log=last_line, eta_clock=warmup_end, recent_returns=[861.7])
    line = capsys.readouterr().out.strip()
    eta = (1_030_005 - 80_000) / 190.0  # 5000 s: 1:23:20
    assert "SPS   18.9" in line and line.endswith(f"ETA {int(eta // 3600)}:{int(eta % 3600 // 60):02d}:20"), line


def test_a_run_logs_every_update_metric_the_returns_and_the_hyperparameters(script, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    args = script.Args(env_id="tests.fake_envs:Counter-v0", num_envs=2, total_timesteps=40, learning_starts=40,
                       eval_frequency=20, eval_episodes=2, batch_size=16, sampler_stats_interval=0)
    summary = script.train(args)
    assert summary["exit_code"] == 0, f"exit code {summary['exit_code']}"
    assert summary["num_updates"] == 21, f"{summary['num_updates']} updates"  # at steps 42, 44, ..., 82
    assert [step for step, _ in summary["eval_returns"]] == [60, 80], summary["eval_returns"]
    events = EventAccumulator(summary["run_dir"]).Reload()
    metrics, _ = one_plain_update(script, dataclasses.replace(args, cuda=False))
    assert {"td_loss", "q"} <= set(metrics), f"update_critic returns {sorted(metrics)}"
    expected = {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "eval/episodic_return",
                *(f"values/{name}" if name == "q" else f"losses/{name}" for name in metrics)}
    missing = expected - set(events.Tags()["scalars"])
    assert not missing, f"not logged: {missing}"
    assert "hyperparameters/text_summary" in events.Tags()["tensors"]


def test_a_forks_new_update_scalar_reaches_tensorboard_from_the_updates_dict_alone(script, tmp_path, monkeypatch):
    """A fork that adds a value to the dict update_critic returns, a float or a tensor, finds it under losses/ with no
    other edit."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    real_update = script.update_critic

    def forked_update(*args, **kwargs):
        return real_update(*args, **kwargs) | {"fork_float": 0.5, "fork_tensor": torch.tensor(2.0)}

    monkeypatch.setattr(script, "update_critic", forked_update)
    summary = script.train(script.Args(env_id="tests.fake_envs:Counter-v0", num_envs=2, total_timesteps=20,
                                       learning_starts=20, eval_episodes=2, batch_size=16, sampler_stats_interval=0))
    assert summary["exit_code"] == 0, summary
    events = EventAccumulator(summary["run_dir"]).Reload()
    logged = {tag: [event.value for event in events.Scalars(tag)] for tag in ("losses/fork_float", "losses/fork_tensor")
              if tag in events.Tags()["scalars"]}
    assert logged == {"losses/fork_float": [0.5], "losses/fork_tensor": [2.0]}, logged


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
                       log_interval_s=1e-9, save_buffer=True, sampler_stats_interval=0)
    summary = script.train(args)
    out = capsys.readouterr().out
    assert summary["exit_code"] == 0, f"exit code {summary['exit_code']}"
    saved = torch.load(summary["checkpoint"], weights_only=True)
    counts = (summary["global_step"], saved["global_step"], saved["replay_buffer"]["size"])
    assert counts == (env_steps,) * 3, f"env steps (run, checkpoint, transitions stored): {counts}"
    assert summary["num_updates"] == saved["num_updates"] == num_updates, \
        f"{summary['num_updates']} updates ({saved['num_updates']} in the checkpoint)"
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


@pytest.mark.parametrize("signals_sent", [1, 2], ids=["one signal", "two signals"])
def test_a_stop_during_an_update_saves_after_it_and_a_second_stops_at_once(script, signals_sent, tmp_path,
                                                                            monkeypatch):
    """The signal falls inside update 3 (where a long run spends most of its time). One: update 3 finishes and the
    checkpoint holds it, learning steps and updates agreeing as at any vector step's end. Two: the run stops at once, in
    the update (the state saved as it is)."""
    monkeypatch.chdir(tmp_path)
    real_update, after_update = script.update_critic, {}

    def update_with_signals(batch, critic, *rest):
        if len(after_update) == 2:  # the third update
            for _ in range(signals_sent):
                os.kill(os.getpid(), signal.SIGTERM)
        metrics = real_update(batch, critic, *rest)
        after_update[len(after_update)] = {k: v.clone() for k, v in critic.state_dict().items()}
        return metrics

    monkeypatch.setattr(script, "update_critic", update_with_signals)
    args = script.Args(env_id="tests.fake_envs:Counter-v0", num_envs=2, total_timesteps=400, learning_starts=20,
                       eval_frequency=1000, eval_episodes=2, batch_size=16, sampler_stats_interval=0)
    handlers_before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    summary = script.train(args)
    assert summary["exit_code"] == 130, summary
    saved = torch.load(summary["checkpoint"], weights_only=True)
    if signals_sent == 2:
        assert saved["num_updates"] == 2, f"{saved['num_updates']} updates saved: the second signal did not stop it"
    else:
        assert saved["num_updates"] == 3 and saved["learning_step"] == 2 * 3, \
            f"{saved['num_updates']} updates and {saved['learning_step']} learning steps saved"
        differ = [k for k, v in saved["critic"].items() if not torch.equal(v, after_update[2][k])]
        assert not differ, f"the saved critic is not the one after update 3: {differ} differ"
    # as they were, not the defaults: a shell's background job (`nohup pytest ... &`) starts with SIGINT ignored
    assert {signum: signal.getsignal(signum) for signum in handlers_before} == handlers_before, \
        "train() must give the signal handlers back"


def test_actions_are_rescaled_from_unit_box_to_env_bounds(script):
    env = script.make_env("Humanoid-v4", seed=0, idx=0, capture_video=False, run_name="unused")()
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    inner_bounds = env.unwrapped.action_space.high
    assert np.allclose(inner_bounds, 0.4)  # Humanoid's true bounds are +-0.4
    assert np.allclose(env.action(np.ones(env.action_space.shape, np.float32)), inner_bounds)
    env.close()
