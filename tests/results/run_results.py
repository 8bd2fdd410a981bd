"""Run the rows of the results table (README "Results"): one run in the foreground, a grid of rows x seeds on a local
pool or as a Slurm job array (through submitit), or resume the rows' stopped runs. Not collected by pytest.

Each row is the authors' protocol (5 envs, 30,000 uniform-random transitions, one update per vector step, 20
evaluation episodes) on the fast path (--compile, and --bf16-chain where the CPU has bf16), evaluated every 50,000
env steps, with the replay buffer saved in each checkpoint so that a stopped run resumes where it stopped; unless the
row's own options say otherwise (--no-bf16-chain, the sweep's and the w study's budgets: --list shows them).

A run is first looked for under runs/ of the working directory, runs/{env_id}__results_{row}__{seed}__*/checkpoint.pt:
a finished run is skipped, a stopped one resumed (`SCRIPT --resume PATH`), and only a run without a checkpoint is
started. So the same command, given again after a stop, a preemption or a time-out, goes on where its runs stopped:
they lose at most what they did since their last checkpoint (written at each evaluation, and on SIGTERM or Ctrl-C).

    python tests/results/run_results.py --list                          # the rows and their commands
    python tests/results/run_results.py nclql-hopper --seed 1          # one run, in the foreground
    python tests/results/run_results.py --resume-stopped                # resume every stopped run, one after another
    python tests/results/run_results.py nclql-hopper --seed 2 --resume-stopped   # resume that run only
    python tests/results/run_results.py nclql-hopper lql-hopper --seed 1 2 3 --workers 2 --threads 1   # local pool
    python tests/results/run_results.py --submitit slurm --time-limit 1440 --cpus-per-task 2   # every row, on Slurm

A grid is the rows given (all, if none) times their seeds (--seed, or each row's own). The pool runs --workers runs at
a time, each with --threads torch threads (OMP_NUM_THREADS; default: the CPUs shared out) and its output in
runs/results_{row}__{seed}.log. --submitit slurm submits the grid as one Slurm job array, a task per run (--partition,
--time-limit, --cpus-per-task, --array-parallelism), and returns; on its time-out signal a task stops its run (which
saves its checkpoint) and submitit requeues it, up to 3 times. --submitit local runs the same jobs through submitit's
local executor, all at once, and waits for them. Job logs: runs/submitit/. --submitit needs submitit (`pip install
-r tests/results/requirements.txt`). --extra-options are appended to each run's command when it starts (a later
option wins), e.g. for a test grid: --extra-options="--total-timesteps 100 --learning-starts 50 --no-compile".

Every command it starts is appended, with the repository's commit and the time, to runs/results_commands.txt.
Summarise with tests/results/summarise.py.
"""
import argparse
import concurrent.futures
import datetime
import glob
import os
import shlex
import shutil
import signal
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# LQL's step-size sweep at a real budget (issue 27): 300,000 env steps, evaluated every 25,000, all on the fp32 chain;
# 1e-2 was added when 3e-3, the largest, led at 300k
SWEEP = {f"lql-step{step_lr}": ("lql", "Hopper-v4", 300_000, (1,), ["--step-lr", step_lr, "--eval-frequency", "25000",
                                                                     "--no-bf16-chain"])
         for step_lr in ("1e-4", "3e-4", "1e-3", "3e-3", "1e-2")}
# --autotune-w's study (issue 30): Hopper-v4, 10,000 random env steps then 60,000, evaluated every 10,000, 5 seeds, on
# the fp32 chain: the authors' fixed w, and w tuned with the normalised gradient and without it
W_STUDY = {f"nclql-60k-{variant}": ("nclql", "Hopper-v4", 60_000, (1, 2, 3, 4, 5),
                                    ["--learning-starts", "10000", "--eval-frequency", "10000", "--no-bf16-chain",
                                     *options])
           for variant, options in [("fixed-w", []), ("autotune-w", ["--autotune-w"]),
                                    ("autotune-w-no-grad-norm", ["--autotune-w", "--no-q-grad-norm"])]}
# row: (script, env id, env steps after the warm-up (--total-timesteps), seeds, options beyond the protocol's)
ROWS = {
    "nclql-hopper": ("nclql", "Hopper-v4", 1_000_000, (1, 2, 4), []),
    "nclql-hopper-fp32": ("nclql", "Hopper-v4", 1_000_000, (3,), ["--no-bf16-chain"]),  # seeds 1-2 ran --bf16-chain
    # --no-bf16-chain in the 1M rows started on 2026-12-04: they spanned sessions on CPUs with and without bf16, and a
    # --bf16-chain run resumes only with bf16
    # lql-hopper runs LQL's default step 3e-4; lql-hopper-step1e-4 ran on 2026-12-02 as lql-hopper, at the old default
    "lql-hopper": ("lql", "Hopper-v4", 1_000_000, (1,), ["--no-bf16-chain"]),
    "lql-hopper-step1e-4": ("lql", "Hopper-v4", 1_000_000, (1,), ["--step-lr", "1e-4"]),
    # From 2026-12-05 on a run must end in the session it starts in (run folders were lost with two machines): LQL's
    # second seed, the ablation and the new environments take the bf16 chain, about 70 minutes to 1M for LQL on two
    # Zen 5 threads where fp32 takes 2-3 hours
    "lql-hopper-bf16": ("lql", "Hopper-v4", 1_000_000, (2,), []),
    "nclql-walker2d": ("nclql", "Walker2d-v4", 1_000_000, (1, 2, 3), []),  # its 500k run (bf16) was lost before 1M
    "nclql-halfcheetah": ("nclql", "HalfCheetah-v4", 500_000, (1,), []),
    "nclql-ant": ("nclql", "Ant-v4", 1_000_000, (1,), []),
    "nclql-humanoid": ("nclql", "Humanoid-v4", 1_000_000, (1,), []),
    **SWEEP,
    "lql-annealed-steps": ("lql", "Hopper-v4", 1_000_000, (1, 2, 3), ["--annealed-step-sizes"]),
    "lql-walker2d-annealed-steps": ("lql", "Walker2d-v4", 1_000_000, (1, 2, 3), ["--annealed-step-sizes"]),
    # issue 30: the study's better tuned variant (w_study/: normalised, by the last third's mean and IQMs) to 1M
    "nclql-hopper-autotune-w": ("nclql", "Hopper-v4", 1_000_000, (1,), ["--autotune-w", "--no-bf16-chain"]),
    **W_STUDY,
}
# What names a run, so that the runner finds its checkpoint: --extra-options may not change it
RUN_NAMING_OPTIONS = ("--env-id", "--seed", "--exp-name", "--resume")
REQUIREMENTS = "pip install -r tests/results/requirements.txt"


def has_bf16_matmul() -> bool:
    """bf16 matmul in hardware (the scripts refuse --bf16-chain elsewhere, e.g. on AMD Zen 3). Asked where the run
    starts, which for a Slurm job is its node, not the machine that submitted it."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def command(row: str, seed: int) -> list[str]:
    script, env_id, total, _, options = ROWS[row]
    bf16 = ["--bf16-chain"] if has_bf16_matmul() and "--no-bf16-chain" not in options else []
    return [sys.executable, os.path.join(ROOT, f"{script}_continuous_action.py"), "--env-id", env_id,
            "--total-timesteps", str(total), "--seed", str(seed), "--exp-name", f"results_{row}", "--compile", *bf16,
            "--save-buffer", *([] if "--eval-frequency" in options else ["--eval-frequency", "50000"]), *options]


def read_checkpoint(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # mmap: the buffer is not read


def is_finished(checkpoint: dict) -> bool:
    """Whether the run has passed its --total-timesteps (the scripts' loop runs while learning_step <= it)."""
    return checkpoint["learning_step"] > checkpoint["args"]["total_timesteps"]


def resume_command(path: str, checkpoint: dict) -> list[str]:
    script = os.path.join(ROOT, f"{checkpoint['algorithm']}_continuous_action.py")
    return [sys.executable, script, "--resume", path]


def stopped_runs() -> list[str]:
    """Checkpoints of results runs that have not reached their --total-timesteps."""
    return [path for path in sorted(glob.glob("runs/*__results_*__*/checkpoint.pt"))
            if not is_finished(read_checkpoint(path))]


def job_command(row: str, seed: int, extra_options=()) -> list[str] | None:
    """What the job of (row, seed) runs: the resumption of its run if runs/ holds the run's checkpoint (the newest, if
    several), None if that run is finished, and else the row's command, with extra_options, to start it."""
    env_id = ROWS[row][1]
    paths = glob.glob(f"runs/{env_id}__results_{row}__{seed}__*/checkpoint.pt")
    if not paths:
        return command(row, seed) + list(extra_options)
    path = max(paths, key=os.path.getmtime)
    checkpoint = read_checkpoint(path)
    return None if is_finished(checkpoint) else resume_command(path, checkpoint)


def ignore_time_out_signal():
    """In the run's process, before the script starts: Slurm's time-out signal (SIGUSR2, whose default is to end the
    process) may reach every process of the job, and the run is to be stopped by SubmititJob.checkpoint instead."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def start_logged(argv: list[str], threads: int | None = None, log_path: str | None = None,
                 in_slurm_job: bool = False) -> subprocess.Popen:
    """Start argv, after appending it to runs/results_commands.txt; with `threads` torch threads (OMP_NUM_THREADS),
    its output appended to log_path if given."""
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    os.makedirs("runs", exist_ok=True)
    with open("runs/results_commands.txt", "a") as f:
        f.write(f"{datetime.datetime.now():%Y-%m-%d %H:%M} {commit} {' '.join(argv[1:])}\n")
    env = os.environ | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    output = open(log_path, "a") if log_path else None
    try:
        return subprocess.Popen(argv, env=env, stdout=output, stderr=subprocess.STDOUT if output else None,
                                preexec_fn=ignore_time_out_signal if in_slurm_job else None)
    finally:
        if output:
            output.close()  # the run holds its own copy


def wait_for(process: subprocess.Popen) -> int:
    """The run's exit code. A Ctrl-C reaches the run too, which saves its checkpoint after the update under way: wait
    for that instead of killing it."""
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue


def start_job(row: str, seed: int, extra_options=(), threads: int | None = None, log_path: str | None = None,
              in_slurm_job: bool = False) -> subprocess.Popen | None:
    """Start, resume or skip (None) the run of (row, seed): job_command's choice, said on stdout."""
    argv = job_command(row, seed, extra_options)
    what = "finished: skipped" if argv is None else f"resumes {argv[-1]}" if "--resume" in argv else "starts"
    print(f"{row} seed {seed}: {what}" + (f" (output: {log_path})" if log_path and argv else ""), flush=True)
    return start_logged(argv, threads, log_path, in_slurm_job) if argv else None


def run_job(row: str, seed: int, extra_options=(), threads: int | None = None, log_path: str | None = None) -> int:
    process = start_job(row, seed, extra_options, threads, log_path)
    return wait_for(process) if process else 0


def run_pool(grid: list[tuple[str, int]], workers: int, threads: int, extra_options) -> int:
    """Run the grid, `workers` runs at a time; the worst exit code. On Ctrl-C the runs under way save and stop (the
    runner waits for them) and the others do not start."""
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(run_job, row, seed, extra_options, threads, f"runs/results_{row}__{seed}.log")
                   for row, seed in grid]
        try:
            return max(future.result() for future in futures)
        except KeyboardInterrupt:
            pool.shutdown(cancel_futures=True)
            return 130


class SubmititJob:
    """The job of (row, seed) as submitit runs it: run_job in the directory it was submitted from. On Slurm's time-out
    signal (SIGUSR2, which the run ignores) submitit calls checkpoint(): the run is stopped with SIGTERM (it saves its
    checkpoint after the update under way) and the job requeued, to resume it. A class, as submitit asks of a job
    that can be requeued."""

    def __init__(self, row: str, seed: int, extra_options: list[str], threads: int, workdir: str):
        self.row, self.seed, self.extra_options, self.threads, self.workdir = row, seed, extra_options, threads, workdir
        self.process = None

    def __call__(self) -> int:
        os.chdir(self.workdir)
        self.process = start_job(self.row, self.seed, self.extra_options, self.threads, in_slurm_job=True)
        return self.process.wait() if self.process else 0

    def checkpoint(self):
        import submitit

        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait()
        return submitit.helpers.DelayedSubmission(
            SubmititJob(self.row, self.seed, self.extra_options, self.threads, self.workdir))


def submit(grid: list[tuple[str, int]], cli, extra_options) -> int:
    """Submit the grid through submitit: to Slurm as one job array (return once submitted), or to its local executor
    (wait for the runs)."""
    try:
        import submitit
    except ImportError:
        sys.exit(f"error: --submitit needs submitit, which is not installed: {REQUIREMENTS}")
    if cli.submitit == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        usage_error("--submitit slurm needs Slurm's sbatch and srun: give it on the cluster's login node (here: "
                    "--workers N, or --submitit local)")
    executor = submitit.AutoExecutor(folder=cli.submitit_dir, cluster=cli.submitit)
    executor.update_parameters(name="results", timeout_min=cli.time_limit, cpus_per_task=cli.cpus_per_task,
                               slurm_partition=cli.partition, slurm_array_parallelism=cli.array_parallelism)
    threads = cli.threads or cli.cpus_per_task
    jobs = executor.submit_array([SubmititJob(row, seed, extra_options, threads, os.getcwd()) for row, seed in grid])
    for (row, seed), job in zip(grid, jobs):
        print(f"{row} seed {seed}: job {job.job_id}, log {job.paths.stdout}")
    if cli.submitit == "slurm":
        print(f"submitted {len(jobs)} jobs; give the same command again to resume what stops")
        return 0
    return max(job.result() for job in jobs)


def usage_error(message: str):
    """Bad input: one line on stderr, exit code 2, as the scripts do."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="*", metavar="ROW", help=f"one of: {', '.join(ROWS)}")
    parser.add_argument("--seed", type=int, nargs="+",
                        help="seeds (default: each row's own; in the foreground its first)")
    parser.add_argument("--resume-stopped", action="store_true")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--workers", type=int, help="run the grid on a local pool of this many runs at a time")
    parser.add_argument("--threads", type=int, help="torch threads per run (OMP_NUM_THREADS)")
    parser.add_argument("--submitit", choices=["slurm", "local"], help="run the grid through submitit")
    parser.add_argument("--partition", help="Slurm partition (default: the cluster's)")
    parser.add_argument("--time-limit", type=int,
                        help="minutes per job (--submitit); a job that reaches it is requeued")
    parser.add_argument("--cpus-per-task", type=int, default=1, help="CPUs per Slurm job (and its --threads default)")
    parser.add_argument("--array-parallelism", type=int, default=256, help="Slurm jobs of the array run at once")
    parser.add_argument("--submitit-dir", default="runs/submitit", help="submitit's job files and logs")
    parser.add_argument("--extra-options", default="", help="appended to each run's command when it starts")
    cli = parser.parse_args()
    unknown = [row for row in cli.rows if row not in ROWS]
    if unknown:
        usage_error(f"unknown row {', '.join(unknown)}: one of {', '.join(ROWS)}")
    extra_options = shlex.split(cli.extra_options)
    naming = [option for option in extra_options if option.split("=")[0] in RUN_NAMING_OPTIONS]
    if naming:
        usage_error(f"--extra-options may not set {', '.join(naming)}: the runner names each run, to find it again")
    for name in ("workers", "threads", "time_limit", "cpus_per_task", "array_parallelism"):
        if getattr(cli, name) is not None and getattr(cli, name) < 1:
            usage_error(f"--{name.replace('_', '-')} must be positive, got {getattr(cli, name)}")
    grid = [(row, seed) for row in cli.rows or ROWS for seed in cli.seed or ROWS[row][3]]
    if cli.list:
        for row, seed in grid:
            print(f"{row} seed {seed}: {' '.join(command(row, seed)[1:] + extra_options)}")
        return 0
    if cli.resume_stopped:
        paths = [path for path in stopped_runs()  # only the rows' (and seeds') given, if any
                 if (not cli.rows or path.split("__")[1] in {f"results_{row}" for row in cli.rows})
                 and (cli.seed is None or int(path.split("__")[2]) in cli.seed)]
        print(f"{len(paths)} stopped run(s): {', '.join(paths) or 'none'}")
        codes = [wait_for(start_logged(resume_command(path, read_checkpoint(path)), cli.threads)) for path in paths]
        return max(codes, default=0)
    if cli.submitit:
        if cli.workers:
            usage_error("give --workers (a local pool) or --submitit, not both")
        if not cli.time_limit:
            usage_error("--submitit needs --time-limit MINUTES, each job's wall-clock limit")
        return submit(grid, cli, extra_options)
    if cli.workers:
        return run_pool(grid, cli.workers, cli.threads or max(1, os.cpu_count() // cli.workers), extra_options)
    if len(cli.rows) != 1 or (cli.seed and len(cli.seed) > 1):
        usage_error("give one row (see --list) and at most one --seed to run in the foreground, --workers N or "
                    "--submitit for a grid, or --resume-stopped")
    return run_job(*grid[0], extra_options, cli.threads)


if __name__ == "__main__":
    sys.exit(main())
