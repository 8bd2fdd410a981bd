"""Claims about --resume and --eval-checkpoint, for both scripts (the `script` fixture in conftest.py)."""
import copy
import dataclasses
import glob
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.conftest import BF16_MATMUL, ROOT

# Counter-v0 with 2 envs: 20 warm-up env steps, then one update per vector step, an evaluation every 16 learning steps.
# No sampler statistics (test_sampler_statistics.py tests them with a resume): at test sizes a call takes ~0.2-0.5 s.
COUNTER = dict(env_id="tests.fake_envs:Counter-v0", num_envs=2, learning_starts=20, eval_frequency=16,
               eval_episodes=2, batch_size=16, sampler_stats_interval=0)


def script_path(script):
    return os.path.join(ROOT, os.path.basename(script.__file__))


FINISHED_RUNS = {}  # (script, options) -> (folder, summary): each short run is trained once, then copied


def finished_run(script, tmp_path, monkeypatch, **overrides):
    """A short run to its end, as tmp_path/runs; returns its summary and checkpoint path (relative to tmp_path)."""
    key = (script.__name__, tuple(sorted(overrides.items())))
    if key not in FINISHED_RUNS:  # trained in the first test's tmp_path, which pytest keeps for the session
        origin = tmp_path / "trained_once"
        origin.mkdir()
        monkeypatch.chdir(origin)
        summary = script.train(script.Args(**{**COUNTER, "total_timesteps": 40, **overrides}))
        assert summary["exit_code"] == 0
        FINISHED_RUNS[key] = origin, summary
    origin, summary = FINISHED_RUNS[key]
    shutil.copytree(origin / "runs", tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    return copy.deepcopy(summary), summary["checkpoint"]


def test_a_run_stopped_by_sigterm_resumes_where_it_stopped(script, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    options = [f"--{name.replace('_', '-')}={value}" for name, value in COUNTER.items()]
    process = subprocess.Popen([sys.executable, script_path(script), *options, "--total-timesteps", "100000000",
                                "--save-buffer", "--log-interval-s", "0.2"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and "eval" not in (line := process.stdout.readline()):
        assert line or process.poll() is None, process.stderr.read()
    process.terminate()  # SIGTERM
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    (path,) = glob.glob(str(tmp_path / "runs" / "*" / "checkpoint.pt"))
    saved = torch.load(path, weights_only=True)
    stopped_at, saved_updates = saved["global_step"], saved["num_updates"]
    assert saved["replay_buffer"]["size"] == stopped_at > 20, \
        f"stopped at env step {stopped_at} with {saved['replay_buffer']['size']} transitions saved"
    assert saved["eval_returns"], "stopped before its first evaluation"

    # Resume in-process, to a total the stopped run had not reached; check what the first action and update find.
    first_update, first_action = {}, {}
    real_update, real_policy = script.update_critic, script.langevin_policy

    def spy_policy(critic, obs, args, *trace):  # trace: sampler_statistics' calls
        first_action.setdefault("rng", torch.get_rng_state())
        return real_policy(critic, obs, args, *trace)

    def spy_update(batch, critic, critic_target, optimizer, policy, args, chain_critic=None):
        if not first_update:
            first_update["critic"] = {k: v.clone() for k, v in critic.state_dict().items()}
            first_update["critic_target"] = {k: v.clone() for k, v in critic_target.state_dict().items()}
            adam_states = optimizer.state_dict()["state"].values()
            first_update["adam"] = [{k: v.clone() for k, v in state.items()} for state in adam_states]
        return real_update(batch, critic, critic_target, optimizer, policy, args, chain_critic)

    monkeypatch.setattr(script, "update_critic", spy_update)
    monkeypatch.setattr(script, "langevin_policy", spy_policy)
    monkeypatch.chdir(tmp_path)
    total = stopped_at - 20 + 40  # 40 learning steps (20 updates) more than where it stopped
    # TensorBoard reads a folder's event files in name order: their start time in whole seconds, then the pid. A
    # resume in the second the stopped run started could sort first (seen: 2 in 12), which no real resume does.
    time.sleep(1.0)
    args = dataclasses.replace(script.Args(**saved["args"]), resume=path, total_timesteps=total, save_buffer=True)
    summary = script.train(args)
    assert summary["exit_code"] == 0, f"exit code {summary['exit_code']}"

    for name in ("critic", "critic_target"):
        differ = [k for k, v in saved[name].items() if not torch.equal(first_update[name][k], v)]
        assert not differ, f"{name} not restored: {differ} differ from the checkpoint's"
    saved_adam = list(saved["optimizer"]["state"].values())
    differ = [(i, k) for i, state in enumerate(saved_adam) for k, v in state.items()
              if not torch.equal(first_update["adam"][i][k], v)]
    assert not differ, f"Adam's state not restored: (parameter, entry) {differ} differ from the checkpoint's"
    assert torch.equal(first_action["rng"], saved["rng"]["torch"]), "torch's random state not restored"
    # The resumed run's buffer (saved again at its end) starts with the stopped run's, transition for transition.
    resumed_buffer = torch.load(path, weights_only=True)["replay_buffer"]
    n = saved["replay_buffer"]["size"]
    assert resumed_buffer["size"] == summary["global_step"] > n, \
        f"{resumed_buffer['size']} transitions after {summary['global_step']} env steps ({n} when stopped)"
    differ = [field for field in script.ReplayBuffer.FIELDS
              if not torch.equal(resumed_buffer[field][:n], saved["replay_buffer"][field])]
    assert not differ, f"the stopped run's transitions changed on resume in {differ}"

    # The counters and the evaluation schedule continue as in a run that was never stopped.
    monkeypatch.undo()
    (tmp_path / "straight").mkdir()
    monkeypatch.chdir(tmp_path / "straight")
    straight = script.train(script.Args(**{**COUNTER, "total_timesteps": total, "save_model": False}))
    assert summary["run_dir"] == os.path.dirname(path)
    counters = {key: (summary[key], straight[key]) for key in ("global_step", "num_updates")}
    assert all(resumed == unstopped for resumed, unstopped in counters.values()), f"(resumed, straight): {counters}"
    assert summary["num_updates"] > saved_updates, f"{summary['num_updates']} updates, {saved_updates} when stopped"
    eval_steps = [step for step, _ in summary["eval_returns"]]
    straight_steps = [step for step, _ in straight["eval_returns"]]
    assert eval_steps == straight_steps, f"evaluated at env steps {eval_steps}, a straight run at {straight_steps}"
    # TensorBoard: one curve on one x-axis, each evaluation once, across the two runs' event files.
    events = EventAccumulator(summary["run_dir"]).Reload()
    logged_steps = [event.step for event in events.Scalars("eval/episodic_return")]
    assert logged_steps == eval_steps, f"TensorBoard has evaluations at {logged_steps}, the run made {eval_steps}"


def test_resuming_without_the_buffer_refills_it_with_the_policy_before_updating(script, tmp_path, monkeypatch,
                                                                                capsys):
    summary, path = finished_run(script, tmp_path, monkeypatch)
    saved = torch.load(path, weights_only=True)
    assert saved["replay_buffer"] is None  # --save-buffer is off by default
    calls = []
    real_update, real_policy = script.update_critic, script.langevin_policy

    def spy_policy(critic, obs, args, *trace):  # trace: sampler_statistics' calls
        calls.append("policy")
        return real_policy(critic, obs, args, *trace)

    def spy_update(*args):
        calls.append("update")
        return real_update(*args)

    monkeypatch.setattr(script, "langevin_policy", spy_policy)
    monkeypatch.setattr(script, "update_critic", spy_update)
    args = dataclasses.replace(script.Args(**saved["args"]), resume=path, total_timesteps=60, save_buffer=True,
                               log_interval_s=1e-9)
    capsys.readouterr()  # only the resumed run's lines (a slow first run prints progress lines too)
    resumed = script.train(args)
    out = capsys.readouterr().out
    assert "no replay buffer saved: refilling 20 transitions with the policy" in out, out
    lines = out.splitlines()
    refilling = [i for i, line in enumerate(lines) if line.startswith("refilling the replay buffer: ")]
    learning = [i for i, line in enumerate(lines) if line.startswith("step ")]
    assert refilling and learning and max(refilling) < min(learning), f"refill lines, then progress lines: {lines}"
    # The refill's 10 vector steps act with the policy (not uniform-random actions), then the first learning step
    # acts with it and updates.
    first_update = calls.index("update") if "update" in calls else None
    assert first_update == 10 + 1, f"the first update came after {first_update} policy calls, not 10 + 1"
    # 20 refilled transitions (uncounted) and 10 more vector steps, each with one update.
    assert resumed["global_step"] == saved["global_step"] + 20, \
        f"env steps {saved['global_step']} -> {resumed['global_step']}"
    assert resumed["num_updates"] == saved["num_updates"] + 10, \
        f"updates {saved['num_updates']} -> {resumed['num_updates']}"
    stored = torch.load(path, weights_only=True)["replay_buffer"]["size"]
    assert stored == 20 + 20, f"{stored} transitions in the buffer: 20 refilled and 20 new expected"


@pytest.mark.parametrize("option, value", [("--w", "300"), ("--env-id", "tests.fake_envs:NaNReward-v0"),
                                           ("--batch-size", "8"), ("--seed", "7")])
def test_resuming_with_a_changed_method_option_is_refused(script, option, value, tmp_path, monkeypatch, capsys):
    _, path = finished_run(script, tmp_path, monkeypatch)
    before = {f: os.path.getmtime(f) for f in glob.glob(str(tmp_path / "runs" / "*" / "*"))}
    code = script.main(["--resume", path, option, value])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"error: {option} is "), err
    assert before == {f: os.path.getmtime(f) for f in glob.glob(str(tmp_path / "runs" / "*" / "*"))}, "wrote"


def test_resume_may_change_the_length_and_takes_the_rest_from_the_checkpoint(script, tmp_path, monkeypatch):
    summary, path = finished_run(script, tmp_path, monkeypatch, w=300.0)
    # `--resume PATH --total-timesteps N` alone: w = 300 comes from the checkpoint, not the default.
    assert script.main(["--resume", path, "--total-timesteps", "60", "--save-buffer"]) == 0
    resumed = torch.load(path, weights_only=True)
    assert resumed["args"]["w"] == 300.0 and resumed["args"]["total_timesteps"] == 60
    assert resumed["global_step"] == summary["global_step"] + 20
    # A resumed run's checkpoint can be evaluated and resumed again (its saved options name the first --resume).
    assert script.main(["--eval-checkpoint", path]) == 0
    assert script.main(["--resume", path, "--total-timesteps", "80"]) == 0


def test_resuming_a_finished_run_without_a_larger_total_says_so_and_changes_nothing(script, tmp_path, monkeypatch,
                                                                                      capsys):
    _, path = finished_run(script, tmp_path, monkeypatch)
    before = torch.load(path, weights_only=True)
    assert script.main(["--resume", path]) == 0
    out = capsys.readouterr().out
    assert "it has reached --total-timesteps 40: give a larger one to go on" in out, out
    after = torch.load(path, weights_only=True)
    assert (after["global_step"], after["num_updates"]) == (before["global_step"], before["num_updates"])
    assert all(torch.equal(v, after["critic"][k]) for k, v in before["critic"].items()), "the critic changed"


def test_a_checkpoint_named_from_inside_its_folder_resumes_there(script, tmp_path, monkeypatch):
    summary, path = finished_run(script, tmp_path, monkeypatch)
    path = os.path.abspath(path)
    monkeypatch.chdir(os.path.dirname(path))
    assert script.main(["--resume", "checkpoint.pt", "--total-timesteps", "60"]) == 0
    assert torch.load(path, weights_only=True)["global_step"] == summary["global_step"] + 20
    assert len(glob.glob(os.path.join(os.path.dirname(path), "events.out.tfevents.*"))) == 2  # one per run


@pytest.mark.parametrize("flag", ["--resume", "--eval-checkpoint"])
@pytest.mark.parametrize("damage", ["missing", "truncated", "not a checkpoint", "other script", "other version",
                                    "other critic"])
def test_a_bad_checkpoint_is_refused_with_exit_2_and_nothing_written(script, flag, damage, tmp_path, monkeypatch,
                                                                     capsys):
    _, path = finished_run(script, tmp_path, monkeypatch)
    bad = str(tmp_path / "bad.pt")
    if damage == "truncated":
        data = open(path, "rb").read()
        open(bad, "wb").write(data[: len(data) // 2])
    elif damage == "not a checkpoint":
        open(bad, "w").write("hello")
    elif damage == "other script":
        checkpoint = torch.load(path, weights_only=True)
        (checkpoint["algorithm"],) = {"nclql", "lql"} - {checkpoint["algorithm"]}  # the other script's name
        torch.save(checkpoint, bad)
    elif damage == "other version":  # a checkpoint whose options this version does not know
        checkpoint = torch.load(path, weights_only=True)
        checkpoint["args"]["an_option_from_elsewhere"] = 1
        torch.save(checkpoint, bad)
    elif damage == "other critic":  # same options, a critic of another layout (e.g. from before sigmas were a buffer)
        checkpoint = torch.load(path, weights_only=True)
        for key in ("critic", "critic_target"):
            checkpoint[key]["a_parameter_from_elsewhere"] = torch.zeros(1)
        torch.save(checkpoint, bad)
    listing = sorted(glob.glob(str(tmp_path / "**"), recursive=True))
    code = script.main([flag, bad])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and "bad.pt" in err, err
    assert sorted(glob.glob(str(tmp_path / "**"), recursive=True)) == listing, "something was written"


def test_a_bf16_chain_run_resumes_without_it_on_a_cpu_without_bf16_matmul(script, tmp_path, monkeypatch, capsys):
    _, path = finished_run(script, tmp_path, monkeypatch)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["args"]["bf16_chain"] = True  # as a run on a CPU with bf16 matmul saves it
    torch.save(checkpoint, path)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    on_cpu = ["--no-cuda"]  # the CPU's bf16: on a machine with a GPU the run would resume there
    code = script.main(["--resume", path, "--total-timesteps", "60", *on_cpu])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--no-bf16-chain to resume" in err, (code, err)
    assert script.main(["--resume", path, "--total-timesteps", "60", "--no-bf16-chain", *on_cpu]) == 0
    resumed = torch.load(path, weights_only=True)
    assert resumed["learning_step"] > 60 and resumed["args"]["bf16_chain"] is False, resumed["args"]


def test_a_checkpoint_from_before_an_option_existed_resumes_with_its_default(script, tmp_path, monkeypatch, capsys):
    """Options are added with a default that keeps the old behaviour, so a run started by an older version (one saved
    without the newest option) resumes with that option at its default; an option this version does not know is
    refused in one line."""
    _, path = finished_run(script, tmp_path, monkeypatch)
    checkpoint = torch.load(path, weights_only=True)
    # a method option (one a resume may not change): LQL's newest, and for NC-LQL one of its sampler's
    newest = "annealed_step_sizes" if script.__name__.startswith("lql") else "num_particles"
    del checkpoint["args"][newest]  # as an older version saved it
    torch.save(checkpoint, path)
    assert script.main(["--resume", path, "--total-timesteps", "60"]) == 0
    resumed = torch.load(path, weights_only=True)
    default = getattr(script.Args(), newest)
    assert resumed["args"][newest] == default and resumed["learning_step"] > 60, (newest, resumed["args"][newest])
    resumed["args"]["an_option_from_the_future"] = 1
    torch.save(resumed, path)
    capsys.readouterr()
    assert script.main(["--resume", path, "--total-timesteps", "80"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another version" in err and "an_option_from_the_future" in err, err


def test_a_checkpoint_is_replaced_atomically(script, tmp_path, monkeypatch):
    _, path = finished_run(script, tmp_path, monkeypatch)
    good = torch.load(path, weights_only=True)
    real_save = torch.save

    def save_then_die(obj, file):  # a kill in the middle of writing the next checkpoint
        real_save(obj, file)
        with open(file, "r+b") as f:
            f.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        script.save_checkpoint(path, {**good, "global_step": -1})
    assert torch.load(path, weights_only=True)["global_step"] == good["global_step"], "the last good one survives"


def test_evaluating_a_checkpoint_repeats_the_runs_own_evaluation(script, tmp_path, monkeypatch, capsys):
    # Hopper: returns depend on the actions. The one evaluation, on reaching --total-timesteps 51, falls on the last
    # vector step (learning step 52), so the final checkpoint holds the critic that evaluation used.
    summary, path = finished_run(script, tmp_path, monkeypatch, env_id="Hopper-v4", learning_starts=100,
                                 total_timesteps=51, eval_frequency=1000, eval_episodes=3, batch_size=64)
    (step, run_return), = summary["eval_returns"]
    saved_args = script.Args(**torch.load(path, weights_only=True)["args"])
    returns = script.evaluate_checkpoint(dataclasses.replace(saved_args, eval_checkpoint=path))["returns"]
    assert returns.mean() == run_return, f"run's evaluation {run_return}, the checkpoint's {returns}"
    listing = sorted(glob.glob(str(tmp_path / "**"), recursive=True))
    assert script.main(["--eval-checkpoint", path]) == 0
    out = capsys.readouterr().out
    assert f"return {run_return:.1f} +- " in out and "min " in out and "max " in out, out
    assert sorted(glob.glob(str(tmp_path / "**"), recursive=True)) == listing, "--eval-checkpoint wrote something"
    # The sampler may be studied at test time: more particles change the returns, not the critic.
    before = torch.load(path, weights_only=True)["critic"]
    four = script.evaluate_checkpoint(dataclasses.replace(saved_args, eval_checkpoint=path, num_particles=4))
    assert not np.array_equal(four["returns"], returns), f"4 particles gave the same returns, {returns}"
    after = torch.load(path, weights_only=True)["critic"]
    assert all(torch.equal(value, after[name]) for name, value in before.items()), "evaluating changed the critic"
    assert script.main(["--eval-checkpoint", path, "--num-particles", "4"]) == 0
    assert "over 3 episodes" in capsys.readouterr().out
    if BF16_MATMUL:  # --bf16-chain draws only the TD target's a': evaluating with it asked for is evaluating
        assert script.main(["--eval-checkpoint", path, "--bf16-chain"]) == 0
        assert f"return {run_return:.1f} +- " in capsys.readouterr().out
    # Options that define the network may not change.
    assert script.main(["--eval-checkpoint", path, "--env-id", "Walker2d-v4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --env-id is Walker2d-v4 here but Hopper-v4 in the checkpoint"), err


def test_a_run_stopped_in_its_warm_up_draws_on_where_its_random_actions_stopped(script, tmp_path, monkeypatch):
    """The warm-up's uniform-random actions come from the action space's random stream: the checkpoint holds its state
    and --resume restores it, so a run stopped at env step 10 of its 20 warm-up steps draws next what it would have."""
    monkeypatch.chdir(tmp_path)
    real_log_episodes = script.log_episodes

    def stop_at_step_10(writer, infos, global_step):  # as a kill after the vector step that reached env step 10
        if global_step == 10:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_log_episodes(writer, infos, global_step)

    monkeypatch.setattr(script, "log_episodes", stop_at_step_10)
    stopped = script.train(script.Args(**{**COUNTER, "total_timesteps": 8, "save_buffer": True}))
    monkeypatch.setattr(script, "log_episodes", real_log_episodes)
    assert (stopped["exit_code"], stopped["global_step"], stopped["num_updates"]) == (130, 10, 0), stopped
    saved = torch.load(stopped["checkpoint"], weights_only=True)
    space = script.make_vector_env(COUNTER["env_id"], COUNTER["num_envs"], 1, False, "unused").action_space
    space.np_random.bit_generator.state = saved["rng"]["action_space"]
    expected = torch.as_tensor(np.concatenate([space.sample() for _ in range(5)]))  # the warm-up's 5 vector steps left
    assert script.main(["--resume", stopped["checkpoint"]]) == 0
    actions = torch.load(stopped["checkpoint"], weights_only=True)["replay_buffer"]["actions"]
    assert torch.equal(actions[:10], saved["replay_buffer"]["actions"]), "the stopped run's transitions changed"
    assert torch.equal(actions[10:20], expected), \
        f"after the resume the warm-up drew {actions[10:20].flatten().tolist()}, not {expected.flatten().tolist()}"


@pytest.mark.parametrize("autotune_w", [False, True], ids=["fixed-w", "autotune-w"])
def test_eval_seed_may_change_on_resume_unless_it_seeds_the_chains_that_tune_w(script, autotune_w, tmp_path,
                                                                              monkeypatch, capsys):
    """--eval-seed seeds the evaluation envs and the probe's chains. Only --autotune-w feeds the chains back into the
    run (w is tuned on them), so only there may it not change."""
    tuning = dict(autotune_w=True, w_tune_start=2, w_tune_interval=2) if autotune_w else {}
    _, path = finished_run(script, tmp_path, monkeypatch, **tuning)
    code = script.main(["--resume", path, "--total-timesteps", "60", "--eval-seed", "7"])
    err = capsys.readouterr().err.strip()
    if autotune_w:
        assert code == 2 and err == f"error: --eval-seed is 7 here but 0 in the checkpoint; it cannot change: drop " \
                                    f"it or start a new run", err
    else:
        assert code == 0 and torch.load(path, weights_only=True)["args"]["eval_seed"] == 7, err
