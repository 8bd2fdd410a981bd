#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA GPU, from the repository root,
#
#     bash tests/benchmarks/gpu_check.sh            # logs under $OUT (default gpu_check/)
#
# 1. the speed table's GPU rows: bench_speed.py on CUDA, the fast path (fp32 and --bf16-chain, with env steps/s of
#    the real loop), then the eager path;
# 2. both scripts on CUDA, their default where a GPU is: a short Hopper-v4 run on the fast path with --autotune-w
#    and --bf16-chain, stopped, resumed from its checkpoint and buffer, and its checkpoint evaluated; then the
#    default path (eager, fp32) for a few updates;
# 3. the test suite on that machine, the files that touch the device first (the tests pin themselves to the CPU only
#    where they say so); 150 s covers about half of it there.
#
# Each part has a time limit, so that a slow part cannot starve the next; a part that fails does not stop the others.
# Part 1 runs alone (it times the GPU); the parts of 2 and 3 run side by side. At the defaults it ends within about
# 9.5 minutes (190 s, then 2's 360 s), up to 20 s more per part killed. The exit status is 1 if any part failed.
# Where gymnasium cannot make Hopper-v4 (MuJoCo missing or broken, e.g. MUJOCO_GL=egl without libEGL) it stops first.
set -u
OUT=$(realpath -m "${OUT:-gpu_check}")
mkdir -p "$OUT"
: > "$OUT/summary.txt"
export PYTHONUNBUFFERED=1
here=$PWD
part() {  # part NAME SECONDS COMMAND...: run COMMAND under a time limit, its output in $OUT/NAME.log
    local name=$1 seconds=$2; shift 2
    local start=$SECONDS
    timeout --signal=INT --kill-after=20 "$seconds" "$@" > "$OUT/$name.log" 2>&1
    echo "$name: exit $? after $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
}
smoke() {  # smoke SCRIPT: train on CUDA, resume, evaluate the checkpoint, then the default path; in a folder of its own
    local script=$1 runs
    runs=$(mktemp -d)
    cd "$runs" || return
    part "${script}_train" 120 python3 "$here/${script}_continuous_action.py" --env-id Hopper-v4 --seed 1 \
        --learning-starts 1000 --total-timesteps 1000 --eval-frequency 1000 --eval-episodes 2 --save-buffer \
        --compile --bf16-chain --autotune-w --w-tune-start 100 --w-tune-interval 100 --exp-name gpu
    local checkpoint
    checkpoint=$(ls -d "$runs"/runs/Hopper-v4__gpu__1__*/checkpoint.pt 2>/dev/null | head -1)
    if [ -n "$checkpoint" ]; then
        part "${script}_resume" 90 python3 "$here/${script}_continuous_action.py" --resume "$checkpoint" \
            --total-timesteps 2000
        part "${script}_eval_checkpoint" 90 python3 "$here/${script}_continuous_action.py" \
            --eval-checkpoint "$checkpoint" --eval-episodes 2
    else
        echo "${script}_resume: exit 1 (no checkpoint written)" | tee -a "$OUT/summary.txt"
    fi
    part "${script}_default_path" 60 python3 "$here/${script}_continuous_action.py" --env-id Hopper-v4 \
        --learning-starts 500 --total-timesteps 500 --eval-frequency 500 --eval-episodes 2 --exp-name gpu-default
    cd "$here" && rm -rf "$runs"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; lscpu | grep "Model name"
  python3 -c "import torch, gymnasium, mujoco; print('torch', torch.__version__, 'gymnasium', gymnasium.__version__,
'mujoco', mujoco.__version__); gymnasium.make('Hopper-v4').close()"; } 2>&1 | tee "$OUT/machine.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "the machine cannot run Hopper-v4: see $OUT/machine.txt"; exit 1; }

# 1. speed, alone on the GPU
part bench_compile "${BENCH_COMPILE_S:-150}" python3 tests/benchmarks/bench_speed.py --devices cuda --paths compile \
    --precisions fp32 bf16 --repeats 10 --sps-updates 300
part bench_eager "${BENCH_EAGER_S:-40}" python3 tests/benchmarks/bench_speed.py --devices cuda --paths eager \
    --precisions fp32 --no-sps --repeats 10

# 2. and 3., side by side
smoke nclql &
smoke lql &
device_tests=(tests/test_resume.py tests/test_training_loop.py tests/test_w_tuning.py tests/test_fast_path.py)
part pytest "${PYTEST_S:-150}" bash -c 'python3 -m pytest -q -p no:cacheprovider "$@"; first=$?
    python3 -m pytest -q -p no:cacheprovider tests ${@/#/--ignore=} && exit $first' pytest "${device_tests[@]}" &
wait
tail -3 "$OUT/pytest.log"
! grep -q "exit [1-9]" "$OUT/summary.txt"
