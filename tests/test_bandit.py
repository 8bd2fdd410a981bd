"""On the 2-D multimodal bandit of tests/benchmarks/bandit_2d.py, what each script's policy must do with a critic
it learned: keep its samples in the action box and put them where the learned Q is high (its chain climbs that
critic's Q1 + Q2 at w = 500; with the default normalised gradient it does not sample exp(w Q) exactly).

Each script's critic is trained by its own `update_critic` for 500 updates (seed 1), then its `langevin_policy`
draws 2000 actions, with the float32 chain and, where the CPU has bf16 matmul, with --bf16-chain's bf16 copy. How
well each critic fits the reward and how many optima each policy covers are measurements, not claims:
tests/benchmarks/README.md. `pytest tests/test_bandit.py -s` prints them.
"""
import functools

import pytest

from tests.benchmarks.bandit_2d import SCRIPTS, report, rounded, text_histogram, train_and_sample
from tests.conftest import BF16_MATMUL, skip_without_bf16_matmul

UPDATES = 500
SAMPLES = 2000
SEED = 1
MIN_Q_GAIN = 0.5
"""the samples' mean learned Q must lie at least this share of the way from uniform-random actions' mean to the
learned Q's maximum on the box; measured 0.80-0.89 (LQL, at its earlier step 1e-4; 0.86 at 3e-4 on seed 1) and
0.95-1.00 (NC-LQL) over seeds 1-6, either chain"""
NAME = {script.__name__: name for name, script in SCRIPTS.items()}
CHAINS = ("fp32", "bf16") if BF16_MATMUL else ("fp32",)  # the scripts refuse --bf16-chain without bf16 matmul


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small tensors: see conftest.py


def trained_policy(name: str, chain: str) -> dict:
    """Script `name`'s policy after UPDATES updates on the bandit, drawn with `chain` ("fp32" or "bf16")."""
    if chain == "bf16":
        skip_without_bf16_matmul()
    return trained_policies(name)[chain]


@functools.cache
def trained_policies(name: str) -> dict:
    """One training run per script; its policy drawn with each chain of CHAINS."""
    results = {result["chain"]: result for result in train_and_sample(name, UPDATES, SAMPLES, seed=SEED, chains=CHAINS)}
    for result in results.values():
        print(f"\n{report(result)} {figure(result)}, training {result['train_s']:.0f} s\n"
              f"{text_histogram(result['samples'])}")
    return results


def figure(result: dict) -> str:
    return (f"{result['name']} after {result['num_updates']} updates, {result['chain']} chain: mean(Q1, Q2) of its "
            f"samples {result['q']:.4f}, of uniform actions {result['uniform_q']:.4f}, max on the box "
            f"{result['max_q']:.4f} (at the optima {rounded(result['q_at_optima'])}, target "
            f"{rounded(result['q_target'])}); not asserted: true reward of its samples {result['reward']:.3f} "
            f"(uniform actions {result['uniform_reward']:.3f}), {result['covered']}/4 optima covered")


@pytest.mark.parametrize("chain", ["fp32", "bf16"], ids=["fp32-chain", "bf16-chain"])
def test_policy_samples_lie_in_the_action_box(script, chain):
    samples = trained_policy(NAME[script.__name__], chain)["samples"]
    largest = samples.abs().max().item()
    assert samples.shape == (SAMPLES, 2) and largest <= 1.0, \
        f"{chain} chain: samples of shape {tuple(samples.shape)}, max |a| {largest} (the box is [-1, 1]^2)"


@pytest.mark.parametrize("chain", ["fp32", "bf16"], ids=["fp32-chain", "bf16-chain"])
def test_policy_samples_sit_near_the_top_of_the_learned_q(script, chain):
    result = trained_policy(NAME[script.__name__], chain)
    gain = (result["q"] - result["uniform_q"]) / (result["max_q"] - result["uniform_q"])
    assert gain >= MIN_Q_GAIN, f"samples go {gain:.2f} of the way from uniform actions' mean learned Q to its " \
                               f"maximum (at least {MIN_Q_GAIN} expected); {figure(result)}"
