"""tests/results/run_results.py without a cluster: a grid through submitit's local executor, run to the end and then
submitted again (a stopped run resumes, a finished one is skipped); a job's answer to its time-out signal; the Slurm
array's batch script, handed to a fake sbatch; the one-line error without submitit."""
import glob
import importlib.util
import os
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time

import torch

from tests.results_extras import import_or_skip
from tests.test_readme_results import parsed_rows

RUN_RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "run_results.py")
# NC-LQL runs of 20 updates on Hopper-v4 with a 2-step chain, one evaluation episode, no compile: seconds each
TINY = ("--total-timesteps 20 --learning-starts 20 --num-envs 1 --batch-size 16 --eval-episodes 1 --eval-frequency 20 "
        "--no-save-buffer --sampler-stats-interval 0 --num-levels 2 --steps-per-level 1 --no-compile --no-bf16-chain")


def run_results(cwd, *args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, RUN_RESULTS, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def checkpoints(runs_dir, seed: int) -> list[str]:
    return glob.glob(os.path.join(runs_dir, f"Hopper-v4__results_nclql-hopper__{seed}__*", "checkpoint.pt"))


def test_submitit_runs_a_grid_and_a_second_submission_resumes_the_stopped_run_and_skips_the_finished(tmp_path):
    import_or_skip("submitit")
    grid = ["nclql-hopper", "--seed", "1", "2", "--submitit", "local", "--time-limit", "10", f"--extra-options={TINY}"]
    first = run_results(tmp_path, *grid)
    assert first.returncode == 0, first.stdout + first.stderr
    (seed_1,), (seed_2,) = checkpoints(tmp_path / "runs", 1), checkpoints(tmp_path / "runs", 2)
    # seed 1 as a run stopped halfway: the same checkpoint, of a 40-step budget
    stopped = torch.load(seed_1, weights_only=True)
    assert stopped["learning_step"] <= 40 < stopped["learning_step"] + 20
    stopped["args"]["total_timesteps"] = 40
    torch.save(stopped, seed_1)
    with open(seed_2, "rb") as f:
        seed_2_bytes = f.read()

    second = run_results(tmp_path, *grid)
    assert second.returncode == 0, second.stdout + second.stderr
    assert (checkpoints(tmp_path / "runs", 1), checkpoints(tmp_path / "runs", 2)) == ([seed_1], [seed_2])  # no new run
    resumed = torch.load(seed_1, weights_only=True)
    assert resumed["learning_step"] > 40 and resumed["eval_returns"][0] == stopped["eval_returns"][0]
    with open(seed_2, "rb") as f:
        assert f.read() == seed_2_bytes  # finished: skipped
    with open(tmp_path / "runs" / "results_commands.txt") as f:
        commands = f.read().splitlines()
    assert len(commands) == 3 and all(TINY in line for line in commands[:2])
    assert commands[2].endswith(f"--resume {os.path.relpath(seed_1, tmp_path)}")


def test_on_its_time_out_signal_a_job_stops_its_run_which_saves_and_the_requeued_job_resumes_it(tmp_path, monkeypatch):
    submitit = import_or_skip("submitit")
    spec = importlib.util.spec_from_file_location("run_results", RUN_RESULTS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    job = module.SubmititJob("nclql-hopper", 1, shlex.split(TINY) + ["--total-timesteps", "5000"], 1, str(tmp_path))
    running = threading.Thread(target=job)  # as submitit runs it
    running.start()
    deadline = time.monotonic() + 300
    while not checkpoints("runs", 1) and time.monotonic() < deadline:  # its first evaluation's, at 20 learning steps
        time.sleep(0.2)
    job.process.send_signal(signal.SIGUSR2)  # Slurm's time-out signal, which may reach the run too: ignored
    requeued = job.checkpoint()  # what submitit calls on that signal, before it requeues the job
    running.join()
    assert job.process.returncode == 130  # the scripts' exit code of a stop, after its checkpoint (killed: -15, -12)
    (path,) = checkpoints("runs", 1)
    assert 20 <= torch.load(path, weights_only=True)["learning_step"] < 5000  # saved on the stop, not finished
    assert isinstance(requeued, submitit.helpers.DelayedSubmission)
    assert (requeued.function.row, requeued.function.seed, requeued.function.process) == ("nclql-hopper", 1, None)
    assert module.job_command("nclql-hopper", 1)[-2:] == ["--resume", path]  # what the requeued job will run


def test_the_slurm_array_has_a_task_per_run_of_the_grid_and_the_options_resources(tmp_path):
    submitit = import_or_skip("submitit")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "sbatch").write_text('#!/bin/sh\ncp "$1" "$SBATCH_SCRIPT_COPY"\necho "Submitted batch job 4242"\n')
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit only checks that srun is there
    for name in ("sbatch", "srun"):
        (fake_bin / name).chmod(stat.S_IRWXU)
    result = run_results(tmp_path, "nclql-hopper", "lql-hopper", "--seed", "1", "2", "--submitit", "slurm",
                         "--partition", "cpu-short", "--time-limit", "90", "--cpus-per-task", "4",
                         "--array-parallelism", "2",
                         env={"PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
                              "SBATCH_SCRIPT_COPY": str(tmp_path / "batch.sh")})
    assert result.returncode == 0, result.stdout + result.stderr
    with open(tmp_path / "batch.sh") as f:
        batch_lines = f.read().splitlines()
    assert {"#SBATCH --partition=cpu-short", "#SBATCH --time=90", "#SBATCH --cpus-per-task=4",
            "#SBATCH --array=0-3%2"} <= set(batch_lines)  # 4 tasks, 2 at a time
    # the array's tasks: the seeds 1 and 2 of nclql-hopper and of lql-hopper, each with 4 torch threads; none ran here
    jobs = [submitit.helpers.DelayedSubmission.load(tmp_path / "runs" / "submitit" / f"4242_{task}_submitted.pkl")
            for task in range(4)]
    assert [(job.function.row, job.function.seed, job.function.threads) for job in jobs] == [
        ("nclql-hopper", 1, 4), ("nclql-hopper", 2, 4), ("lql-hopper", 1, 4), ("lql-hopper", 2, 4)]
    assert glob.glob(str(tmp_path / "runs" / "Hopper-v4__*")) == []


def test_without_submitit_it_says_in_one_line_what_to_install(tmp_path):
    (tmp_path / "submitit.py").write_text("raise ModuleNotFoundError('No module named submitit', name='submitit')\n")
    result = run_results(tmp_path, "lql-hopper", "--submitit", "local", "--time-limit", "10",
                         env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1 and not (tmp_path / "runs").exists()
    assert result.stderr.splitlines() == [
        "error: --submitit needs submitit, which is not installed: pip install -r tests/results/requirements.txt"]


def test_off_a_slurm_cluster_the_slurm_submission_says_in_one_line_where_to_give_it(tmp_path):
    import_or_skip("submitit")
    (tmp_path / "no_slurm").mkdir()
    result = run_results(tmp_path, "lql-hopper", "--submitit", "slurm", "--time-limit", "10",
                         env={"PATH": str(tmp_path / "no_slurm")})
    assert result.returncode == 2 and not (tmp_path / "runs").exists()
    assert result.stderr.splitlines() == [
        "error: --submitit slurm needs Slurm's sbatch and srun: give it on the cluster's login node (here: "
        "--workers N, or --submitit local)"]


def test_list_gives_the_command_of_every_run_in_readmes_results_table():
    """README: '`python tests/results/run_results.py --list` gives each one's' (each run of its results table)."""
    listed = run_results(os.getcwd(), "--list")
    assert listed.returncode == 0, listed.stderr
    commands = dict(line.split(": ", 1) for line in listed.stdout.splitlines() if ": " in line)
    for row in parsed_rows():
        for exp_name, seed in row["runs"]:
            line = commands.get(f"{exp_name.removeprefix('results_')} seed {seed}", "")
            assert f"--exp-name {exp_name} " in line and f"--seed {seed} " in line, (
                f"README row '{row['line']}' names {exp_name} seed {seed}, which --list does not give")
