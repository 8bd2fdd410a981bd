"""Claims: `--compile` changes the speed, not the results; `--bf16-chain` changes only the dtype of the chain that
draws the TD target's a' (its distance to the authors' numbers is in test_golden.py).

One short training run per path on the counting env, with the same seed; batch size, env count and evaluation
episodes are all 4 so that the compiled chain has a single batch shape (one compile, ~20-50 s on 2 cores).
"""
import pytest
import torch

from tests.conftest import skip_without_bf16_matmul, update_parts

NUM_UPDATES = 32 // 4 + 1  # total_timesteps // num_envs + 1, as the authors count


def small_args(script, short_chain, **overrides):
    # No sampler statistics: on the fast path their first call compiles the critic for the probe's shape (~20 s)
    return script.Args(env_id="tests.fake_envs:Counter-v0", num_envs=4, batch_size=4, eval_episodes=4,
                       total_timesteps=32, learning_starts=16, eval_frequency=10**6, sampler_stats_interval=0,
                       **short_chain, **overrides)


def test_compiled_training_matches_eager(script, short_chain, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = {}
    for compile_ in (False, True):
        summary = script.train(small_args(script, short_chain, compile=compile_, exp_name=f"compile_{compile_}"))
        assert summary["exit_code"] == 0, f"--compile={compile_}: exit code {summary['exit_code']}"
        assert summary["num_updates"] == NUM_UPDATES, f"--compile={compile_}: {summary['num_updates']} updates"
        runs[compile_] = torch.load(summary["checkpoint"], weights_only=True)["critic"]
    worst = max((runs[True][name] - runs[False][name]).abs().max().item() for name in runs[False])
    # Compiled and eager draw the same random numbers; what differs is float rounding (and mish's one-exp form).
    assert worst < 1e-4, f"critic weights after 9 updates differ by {worst:.2e} between --compile and eager"
    print(f"\n{script.__name__}: max |weight(compiled) - weight(eager)| after 9 updates = {worst:.2e} "
          f"(bitwise equal: {worst == 0})")


def test_fast_path_mish_matches_torch_mish_in_value_and_gradient(script):
    # The fast path's one-exp form must be mish wherever float32 pre-activations can land, tails included.
    x = torch.cat([torch.linspace(-100, 100, 20001), torch.randn(10000) * 3]).double()
    reference = torch.nn.functional.mish(x.requires_grad_(True))
    (reference_grad,) = torch.autograd.grad(reference.sum(), x)
    x32 = x.detach().float().requires_grad_(True)
    ours = script.mish_one_exp(x32)
    (ours_grad,) = torch.autograd.grad(ours.sum(), x32)
    scale = reference.detach().abs().clamp(min=1e-30)
    relative_error = ((ours.double() - reference).abs() / scale).max().item()
    assert relative_error < 2e-6, f"relative error of mish(x) up to {relative_error:.2e}"
    # Its autograd loses digits where n / (n + 2) has n ~ e^(2x) huge (7 < x < 20): 5e-6 measured, 1e-5 allowed.
    grad_error = (ours_grad.double() - reference_grad).abs().max().item()
    assert grad_error < 1e-5, f"absolute error of mish'(x) up to {grad_error:.2e}"


def test_bf16_chain_draws_only_the_td_targets_a_prime_on_a_bf16_copy_that_follows_the_critic(script, monkeypatch):
    args = script.Args(learning_rate=1e-3, bf16_chain=True)  # Adam steps of ~1e-3: they change bf16 weights
    critic, critic_target, optimizer, batch = update_parts(script, args)
    calls, real_policy = [], script.langevin_policy

    def spy_policy(chain, obs, args):
        calls.append((chain, [p.clone() for p in chain.parameters()]))
        actions = real_policy(chain, obs, args)
        assert actions.dtype == torch.float32, f"the chain's actions are {actions.dtype}, not float32"
        return actions

    monkeypatch.setattr(script, "langevin_policy", spy_policy)
    policy, chain_critic = script.fast_path(args, critic, critic_target, optimizer)
    assert policy is spy_policy, "the acting policy must be langevin_policy itself (on the float32 critic)"
    for update in range(3):
        before = [p.detach().to(torch.bfloat16) for p in critic.parameters()]
        metrics = script.update_critic(batch, critic, critic_target, optimizer, policy, args, chain_critic)
        assert len(calls) == update + 1, f"{len(calls)} chains drawn in {update + 1} updates: one per update, for a'"
        chain, params_seen = calls[-1]
        assert chain is chain_critic and chain is not critic, f"update {update}: a' was not drawn on the bf16 copy"
        stale = sum(not torch.equal(p_seen, p) for p_seen, p in zip(params_seen, before))
        assert stale == 0, f"update {update}: {stale} of the chain's tensors were not bf16(critic before the update)"
        assert all(torch.isfinite(value) for value in metrics.values()), metrics
    # What tune_w measures on after an update: the same copy, holding the critic's latest weights
    stale = sum(not torch.equal(p_chain, p.detach().to(torch.bfloat16))
                for p_chain, p in zip(chain_critic.parameters(), critic.parameters()))
    assert stale == 0, f"after the last update the copy holds {stale} stale tensors"
    moved = sum(not torch.equal(p_first, p_last) for p_first, p_last in zip(calls[0][1], calls[-1][1]))
    assert moved > 0, "the bf16 copy did not change between updates, so 'it follows the critic' proved nothing"
    dtypes = {p.dtype for p in [*critic.parameters(), *critic_target.parameters()]}
    assert dtypes == {torch.float32}, f"the critic and its target hold {dtypes}"
    chain_critic = calls[0][0]
    chain_dtypes = {(p.dtype, p.requires_grad) for p in chain_critic.parameters()}
    assert chain_dtypes == {(torch.bfloat16, False)}, f"the copy's weights are (dtype, requires_grad) {chain_dtypes}"
    buffer_dtypes = {b.dtype for b in chain_critic.buffers()}  # NC-LQL's sigmas; LQL's critic has none
    assert buffer_dtypes <= {torch.float32}, f"the copy's buffers are {buffer_dtypes}: only the weights go bf16"
    adam_dtypes = {state["exp_avg"].dtype for state in optimizer.state.values()}
    assert adam_dtypes == {torch.float32}, f"Adam's moments are {adam_dtypes}"


def record_chains(script, monkeypatch):
    """Spy on the critics train() hands out: the one each update_critic draws the TD target's a' on (its chain_critic,
    else the critic), and those acting and evaluation draw on (`acting`)."""
    chains, acting = [], []
    real_update, real_act = script.update_critic, script.act

    def spy_update(batch, critic, critic_target, optimizer, policy, args, chain_critic=None):
        chains.append(critic if chain_critic is None else chain_critic)
        return real_update(batch, critic, critic_target, optimizer, policy, args, chain_critic)

    def spy_act(policy, critic, obs, args):
        acting.append(critic)
        return real_act(policy, critic, obs, args)

    monkeypatch.setattr(script, "update_critic", spy_update)
    monkeypatch.setattr(script, "act", spy_act)
    return chains, acting


@pytest.mark.parametrize("compile_", [False, True], ids=["eager", "compile"])
def test_a_run_with_bf16_chain_trains_its_float32_critic_drawing_a_prime_on_a_bf16_copy(
        script, short_chain, compile_, tmp_path, monkeypatch):
    skip_without_bf16_matmul()
    monkeypatch.chdir(tmp_path)
    chains, acting = record_chains(script, monkeypatch)
    summary = script.train(small_args(script, short_chain, compile=compile_, bf16_chain=True,
                                      exp_name=f"bf16_{compile_}"))
    assert summary["exit_code"] == 0, f"exit code {summary['exit_code']}"
    assert summary["num_updates"] == NUM_UPDATES, f"{summary['num_updates']} updates"
    chain_dtypes = [{p.dtype for p in chain.parameters()} for chain in chains]
    assert chain_dtypes == [{torch.bfloat16}] * NUM_UPDATES, f"dtypes of the chains the updates drew: {chain_dtypes}"
    acting_dtypes = {p.dtype for critic in acting for p in critic.parameters()}
    assert acting_dtypes == {torch.float32}, f"acting and evaluation ran on critics of {acting_dtypes}"
    saved = torch.load(summary["checkpoint"], weights_only=True)
    not_fp32 = {name: value.dtype for name, value in saved["critic"].items() if value.dtype != torch.float32}
    assert not not_fp32, f"the saved critic holds non-float32 tensors: {not_fp32}"
    non_finite = [name for name, value in saved["critic"].items() if not torch.isfinite(value).all()]
    assert not non_finite, f"non-finite tensors in the saved critic: {non_finite}"


def test_a_run_without_bf16_chain_draws_a_prime_on_the_critic_itself(script, short_chain, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    chains, acting = record_chains(script, monkeypatch)
    summary = script.train(small_args(script, short_chain, save_model=False))
    assert summary["exit_code"] == 0, f"exit code {summary['exit_code']}"
    assert len(chains) == NUM_UPDATES, f"{len(chains)} chains drawn by {NUM_UPDATES} updates"
    critics = {id(critic) for critic in chains + acting}
    assert len(critics) == 1, f"a' and the actions were drawn on {len(critics)} different critics, not the one critic"


@pytest.mark.parametrize("bf16_chain", [False, True], ids=["fp32", "bf16"])
def test_autotune_w_measures_the_chains_of_the_td_targets_critic(script, short_chain, bf16_chain, tmp_path,
                                                                  monkeypatch):
    """tune_w draws its probe chains on the critic the TD target's a' are drawn on: with --bf16-chain the bfloat16
    copy (its cost: README, Tuning w), else the online critic (the target critic has no grad)."""
    if bf16_chain:
        skip_without_bf16_matmul()
    monkeypatch.chdir(tmp_path)
    measured, real_tune_w = [], script.tune_w

    def spy_tune_w(w, policy, critic, probe_obs, args):
        measured.append({(p.dtype, p.requires_grad) for p in critic.parameters()})
        return real_tune_w(w, policy, critic, probe_obs, args)

    monkeypatch.setattr(script, "tune_w", spy_tune_w)
    summary = script.train(small_args(script, short_chain, bf16_chain=bf16_chain, autotune_w=True, w_tune_start=2,
                                      w_tune_interval=2, save_model=False))
    assert summary["exit_code"] == 0, f"exit code {summary['exit_code']}"
    expected = {(torch.bfloat16, False)} if bf16_chain else {(torch.float32, True)}
    assert measured == [expected] * (NUM_UPDATES // 2), f"tune_w measured on critics of (dtype, grad) {measured}"
