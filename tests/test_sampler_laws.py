"""Claims about the laws the two chains sample, measured on analytic critics (no training).

Each test runs thousands of independent chains at once (one per row of a dummy observation) with the scripts'
own samplers, `lql.langevin_sample` and `nclql.annealed_langevin_sample`, on a Q whose target law is known in
closed form, and compares the samples with that law. Tolerances come from the sample size only: Z standard
errors for a moment or a share, the Dvoretzky-Kiefer-Wolfowitz bound at the same false-alarm rate for a whole
distribution function. Where the chain is known to be biased by its finite step, the bias is computed exactly
and is part of the prediction, not of the tolerance. Every case sits well inside the box [-1, 1]^d, so the
clipping after each step never acts (the tests check it).

Run with `pytest tests/test_sampler_laws.py -s` to see the figures.
"""
import functools
import math

import numpy as np
import pytest
import torch

import lql_continuous_action as lql
import nclql_continuous_action as nclql

Z = 4.0
"""tolerance in standard errors: a correct sampler fails one comparison with probability 6e-5"""
ALPHA = math.erfc(Z / math.sqrt(2))
"""the same two-sided false-alarm rate, used for the distribution-function (DKW) checks"""
W = 500.0
"""the scripts' default inverse temperature"""


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small tensors: see conftest.py


def dkw_bound(n: int) -> float:
    """sup_x |F_n(x) - F(x)| exceeds this with probability <= ALPHA for n iid samples (DKW, Massart's constant)."""
    return math.sqrt(math.log(2 / ALPHA) / (2 * n))


def ks_distance(samples: np.ndarray, cdf) -> float:
    """Kolmogorov-Smirnov distance between the samples' empirical CDF and `cdf`."""
    x = np.sort(samples)
    f = cdf(x)
    n = len(x)
    return float(max((np.arange(1, n + 1) / n - f).max(), (f - np.arange(n) / n).max()))


def normal_cdf(x):
    return 0.5 * (1 + torch.special.erf(torch.as_tensor(x, dtype=torch.float64) / math.sqrt(2))).numpy()


# UNNORMALISED CHAIN ON A QUADRATIC Q
# Q(a) = -1/2 (a - m)^T P (a - m), so exp(w Q) = N(m, S) with S = (w P)^-1. One step of the chain,
#     a <- a + (h/2) w grad Q(a) + sqrt(h) z = m + (I - (h/2) S^-1)(a - m) + sqrt(h) z,
# is linear, so its mean and covariance after any sequence of steps h_1..h_K follow exactly from
#     mean <- B mean,  cov <- B cov B^T + h I,  B = I - (h/2) S^-1,
# starting from the uniform init (mean 0, cov I/3). For a fixed h the fixed point is
#     cov_h = S (I - (h/4) S^-1)^-1,
# i.e. the variance along each eigendirection of S, s^2, is inflated to s^2 / (1 - h / (4 s^2)): the known bias
# of unadjusted Langevin, which vanishes only as h -> 0.
QUAD_MEAN = np.array([0.2, -0.1])
QUAD_COV = np.array([[0.08**2, 0.6 * 0.08 * 0.12], [0.6 * 0.08 * 0.12, 0.12**2]])  # sd 0.08, 0.12, corr 0.6
QUAD_P = torch.tensor(np.linalg.inv(W * QUAD_COV), dtype=torch.float32)


def quadratic_q(a: torch.Tensor) -> torch.Tensor:
    d = a - torch.tensor(QUAD_MEAN, dtype=a.dtype)
    return -0.5 * ((d @ QUAD_P.to(a.dtype)) * d).sum(-1)


def in_bf16(q_fn):
    """Q computed in bfloat16 from float32 actions, as --bf16-chain's critic does; its gradient comes back float32."""
    return lambda a, *level: q_fn(a.to(torch.bfloat16), *level)


def ula_moments(step_sizes: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and covariance of the unclipped chain after `step_sizes`, from a ~ U[-1, 1]^2."""
    s_inv = np.linalg.inv(QUAD_COV)
    mean, cov = -QUAD_MEAN, np.eye(2) / 3  # of a - m
    for h in step_sizes:
        b = np.eye(2) - 0.5 * h * s_inv
        mean, cov = b @ mean, b @ cov @ b.T + h * np.eye(2)
    return mean + QUAD_MEAN, cov


@functools.cache
def run_lql_quadratic(n, bf16=False):
    torch.manual_seed(0)
    h, k = 1e-3, 300  # a step large enough to see its bias; 300 steps forget the init to 1.5e-4
    q_fn = in_bf16(quadratic_q) if bf16 else quadratic_q
    return lql.langevin_sample(q_fn, batch_size=n, act_dim=2, step_sizes=[h] * k, w=W, grad_norm=False), [h] * k


@functools.cache
def run_nclql_quadratic(n, bf16=False):
    torch.manual_seed(0)
    # Gaussian smoothing of a quadratic only lowers it by a constant, sigma^2 tr(P) / 2: each level's landscape
    # is exact. The default schedule (steps up to 1.0) would overshoot this Q to the box faces; this one is
    # stable: steps 4.5e-3 down to 5e-4, 60 per level.
    sigmas, step_lr, per_level = nclql.sigma_schedule(sigma_max=0.03, sigma_min=0.01, num_levels=5), 5e-4, 60
    trace_p = float(QUAD_P.trace())

    def q_fn(a, level):
        return quadratic_q(a) - 0.5 * sigmas[level].to(a.dtype) ** 2 * trace_p

    actions = nclql.annealed_langevin_sample(in_bf16(q_fn) if bf16 else q_fn, batch_size=n, act_dim=2, sigmas=sigmas,
                                             steps_per_level=per_level, step_lr=step_lr, w=W, grad_norm=False)
    steps = [step_lr * (s / sigmas[-1].item()) ** 2 for s in sigmas.tolist() for _ in range(per_level)]
    return actions, steps


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32-q", "bf16-q"])
@pytest.mark.parametrize("run", [run_lql_quadratic, run_nclql_quadratic], ids=["lql", "nclql"])
def test_unnormalised_chain_samples_exp_wq_up_to_the_exact_step_size_bias(run, bf16):
    n = 40_000
    actions, steps = run(n, bf16)
    assert (actions.abs() < 1).all(), "a chain touched the box: the unclipped prediction does not apply"
    a = actions.double().numpy()
    mean, cov = a.mean(0), np.cov(a.T)
    x = a - mean
    se_mean = np.sqrt(np.diag(cov) / n)
    se_cov = np.array([[(x[:, i] * x[:, j]).std() / math.sqrt(n) for j in range(2)] for i in range(2)])
    pred_mean, pred_cov = ula_moments(steps)
    z_mean = (mean - pred_mean) / se_mean
    z_cov = (cov - pred_cov) / se_cov
    z_boltzmann = (cov - QUAD_COV) / se_cov  # the h -> 0 law, ignoring the step-size bias
    figure = (f"mean {np.round(mean, 4)} vs {np.round(pred_mean, 4)} (z {np.round(z_mean, 1)}); "
              f"cov [s11 s12 s22] {np.round(cov[np.triu_indices(2)], 6)} vs chain's exact "
              f"{np.round(pred_cov[np.triu_indices(2)], 6)} (z {np.round(z_cov[np.triu_indices(2)], 1)}); "
              f"exp(wQ)'s own {np.round(QUAD_COV[np.triu_indices(2)], 6)} would be off by "
              f"z {np.round(z_boltzmann[np.triu_indices(2)], 1)}; last step {steps[-1]:g}, n {n}")
    print(f"\n[{run.__name__}, {'bf16' if bf16 else 'fp32'} Q] {figure}")
    assert np.abs(z_mean).max() < Z, figure
    assert np.abs(z_cov).max() < Z, figure


def test_at_step_1e_3_the_step_size_bias_is_measurable():
    """The previous test has the power to see the discretisation bias it corrects for, at h = 1e-3."""
    n = 40_000
    actions, _ = run_lql_quadratic(n)
    a = actions.double().numpy()
    x = a - a.mean(0)
    var = x.var(0)
    se_var = np.array([(x[:, i] ** 2).std() / math.sqrt(n) for i in range(2)])
    ratio = var / np.diag(QUAD_COV)
    z = (var - np.diag(QUAD_COV)) / se_var
    figure = f"sample var / exp(wQ) var = {np.round(ratio, 4)} (z {np.round(z, 1)}), n {n}"
    print(f"\n{figure}")
    assert np.abs(z).max() > Z, figure


# NORMALISED CHAIN
# With grad_norm the step keeps only the direction of grad Q. In 1-D, for any Q increasing up to a* and decreasing
# after it, the step is a <- a - c sign(a - a*) + sqrt(h) z with c = h w / 2, whatever Q's curvature or scale:
#   * h w^2 << 1 (steps much shorter than the law's scale 1/w): the continuous-time limit, an SDE with drift
#     -(w/2) sign(a - a*), whose stationary law is exp(-w |a - a*|), Laplace with scale 1/w (not exp(w Q)). The
#     discrete chain's variance exceeds it by about h w^2 / 4 (0.2% at h w^2 = 0.01, measured with 1e5 chains),
#     below the test's 1% standard error.
#   * h w^2 >> 1 (h = 1e-3, w = 500: h w^2 = 250, c = 0.25 >> sqrt(h) = 0.03; LQL's step 1e-4 gives 25):
#     x = a - a* moves by -c sign(x), which is +c modulo 2c, so x mod 2c performs a rotation plus Gaussian noise
#     and is exactly uniform; once |x| < 2c, x - c sign(x) lands in [-c, c], so after every step
#         a = a* + U(-c, c) + N(0, h)
#     (exact up to the chance that the noise exceeds c, exp(-c^2 / 2h) = e^-31 here): a flat blur of half-width
#     h w / 2 around the argmax, sd 0.148, where exp(w Q) has sd 0.045 for Q = -(a - a*)^2 / 2 and 0.006 for 50 Q.
# The law depends on Q only through its argmax: the normalised chain cannot express a temperature.
A_STAR = 0.3


def uniform_plus_normal_cdf(c, h):
    """CDF of A_STAR + U(-c, c) + N(0, h): (1 / 2c) int_{-c}^{c} Phi((x - u) / eps) du, eps = sqrt(h)."""
    eps = math.sqrt(h)

    def integral_of_phi(t):  # t Phi(t) + phi(t), an antiderivative of the normal CDF
        return t * normal_cdf(t) + np.exp(-t**2 / 2) / math.sqrt(2 * math.pi)

    def cdf(x):
        return eps / (2 * c) * (integral_of_phi((x - A_STAR + c) / eps) - integral_of_phi((x - A_STAR - c) / eps))

    return cdf


def laplace_cdf(w):
    def cdf(x):
        x = x - A_STAR
        return np.where(x < 0, 0.5 * np.exp(w * np.minimum(x, 0)), 1 - 0.5 * np.exp(-w * np.maximum(x, 0)))

    return cdf


@pytest.mark.parametrize("regime, curvature, seed, bf16", [
    ("large_step_uniform_blur", 1.0, 0, False), ("large_step_uniform_blur", 50.0, 1, False),
    ("small_step_laplace", 1.0, 2, False), ("large_step_uniform_blur", 1.0, 3, True)])
def test_normalised_chain_samples_a_law_set_by_the_argmax_alone(regime, curvature, seed, bf16):
    torch.manual_seed(seed)  # a different seed per case: each is an independent draw from the same law
    if regime == "large_step_uniform_blur":
        n, w, h, steps = 40_000, W, 1e-3, 200  # arrival takes ~5 steps of c = 0.25
        c = h * w / 2
        law, pred_var, cdf = f"{A_STAR} + U(-{c:g}, {c:g}) + N(0, {h:g})", c**2 / 3 + h, uniform_plus_normal_cdf(c, h)
    else:
        n, w, h = 10_000, 10.0, 1e-4  # h w^2 = 0.01; arrival takes up to 1.3 / c = 2600 steps of c = 5e-4
        steps = 6000
        law, pred_var, cdf = f"Laplace({A_STAR}, 1/{w:g})", 2 / w**2, laplace_cdf(w)

    def q_fn(a):
        return -0.5 * curvature * ((a - A_STAR) ** 2).sum(-1)

    actions = lql.langevin_sample(in_bf16(q_fn) if bf16 else q_fn, batch_size=n, act_dim=1, step_sizes=[h] * steps,
                                  w=w, grad_norm=True)
    assert (actions.abs() < 1).all(), "a chain touched the box: the unclipped law does not apply"
    a = actions[:, 0].double().numpy()
    x = a - a.mean()
    se_mean, se_var = a.std() / math.sqrt(n), (x**2).std() / math.sqrt(n)
    z_mean, z_var = (a.mean() - A_STAR) / se_mean, (a.var() - pred_var) / se_var
    ks, bound = ks_distance(a, cdf), dkw_bound(n)
    figure = (f"{regime}, Q = -{curvature:g} (a - {A_STAR})^2 / 2 in {'bf16' if bf16 else 'fp32'}, w {w:g}, h {h:g}: "
              f"law {law}; "
              f"mean {a.mean():.4f} (z {z_mean:+.1f}), sd {a.std():.4f} vs {math.sqrt(pred_var):.4f} "
              f"(var z {z_var:+.1f}), KS {ks:.4f} vs DKW bound {bound:.4f}; exp(wQ) would have sd "
              f"{1 / math.sqrt(w * curvature):.4f}; n {n}")
    print(f"\n{figure}")
    assert abs(z_mean) < Z, figure
    assert abs(z_var) < Z, figure
    assert ks < bound, figure


# ANNEALED CHAIN ON TWO SEPARATED MODES OF UNEQUAL WEIGHT
# Boltzmann law p(a) = 0.2 N(-0.3, s^2) + 0.8 N(0.3, s^2), s = 0.03: the modes are 20 s apart, with a barrier of
# over 40 nats between them. Level l's landscape is the exact Gaussian-smoothed log-density, as NCSN has it:
#     w Q_l(a) = log (p * N(0, sigma_l^2))(a) = log sum_k pi_k N(a; mu_k, s^2 + sigma_l^2).
# At sigma_0 = 0.3 the smoothed law is one broad bump that chains cross freely; as sigma_l shrinks, the barrier
# rises and each chain stays in the mode it is in, in the proportion the smoothed law gave it. The plain chain runs
# on the last level's landscape: from a uniform init it stays in the basin it starts in, so it splits ~1/2 : 1/2.
MIX_WEIGHTS = torch.tensor([0.2, 0.8])
MIX_MEANS = torch.tensor([-0.3, 0.3])
MIX_SD = 0.03


def mixture_log_density(a: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """log sum_k pi_k N(a; mu_k, var) for a (batch, 1) and var (batch,) or scalar, up to a constant."""
    var = torch.as_tensor(var, dtype=a.dtype).reshape(-1, 1)
    log_components = torch.log(MIX_WEIGHTS) - 0.5 * (a - MIX_MEANS) ** 2 / var - 0.5 * torch.log(var)
    return torch.logsumexp(log_components, dim=-1)


def mode_shares(actions: torch.Tensor, sd: float) -> list[float]:
    """Share of samples within 4 sd of each mode (the law puts 0.99994 of each component there)."""
    return [float(((actions[:, 0] - mu).abs() < 4 * sd).float().mean()) for mu in MIX_MEANS.tolist()]


def test_annealing_over_smoothed_landscapes_recovers_mode_weights_that_plain_langevin_cannot():
    n = 8000
    # alpha_l = step_lr (sigma_l / sigma_min)^2 keeps alpha_l / (s^2 + sigma_l^2) <= 0.1 at every level; 600 steps
    # per level let chains keep crossing until the barrier is a few nats high.
    sigmas, step_lr, per_level = nclql.sigma_schedule(sigma_max=0.3, sigma_min=0.01, num_levels=10), 1e-5, 600
    level_var = MIX_SD**2 + sigmas**2

    torch.manual_seed(0)
    annealed = nclql.annealed_langevin_sample(lambda a, level: mixture_log_density(a, level_var[level]) / W,
                                              batch_size=n, act_dim=1, sigmas=sigmas, steps_per_level=per_level,
                                              step_lr=step_lr, w=W, grad_norm=False)
    # The plain chain on the sharpest landscape, same number of gradient steps, at the step the annealed chain
    # uses at its top level relative to the landscape's width (alpha / variance = 0.1).
    clean_var = float(level_var[-1])
    torch.manual_seed(0)
    plain = lql.langevin_sample(lambda a: mixture_log_density(a, clean_var) / W, batch_size=n, act_dim=1,
                                step_sizes=[0.1 * clean_var] * (len(sigmas) * per_level), w=W, grad_norm=False)
    assert (annealed.abs() < 1).all() and (plain.abs() < 1).all(), "a chain touched the box"
    # For the record, NC-LQL's default schedule (sigma 0.1 -> 0.001, 2 steps per level, steps 1.0 -> 1e-4) on the
    # same modes: sigma_max = 0.1 never merges modes 0.6 apart, and its first steps throw the chains to the faces.
    default = nclql.Args()
    default_sigmas = nclql.sigma_schedule(default.sigma_max, default.sigma_min, default.num_levels)
    torch.manual_seed(0)
    at_defaults = nclql.annealed_langevin_sample(
        lambda a, level: mixture_log_density(a, MIX_SD**2 + default_sigmas[level] ** 2) / W, batch_size=n, act_dim=1,
        sigmas=default_sigmas, steps_per_level=default.steps_per_level, step_lr=default.step_lr, w=W, grad_norm=False)

    sd = math.sqrt(clean_var)
    annealed_shares, plain_shares = mode_shares(annealed, sd), mode_shares(plain, sd)
    weight = float(MIX_WEIGHTS[0])
    se = math.sqrt(weight * (1 - weight) / n)
    z_annealed, z_plain = (annealed_shares[0] - weight) / se, (plain_shares[0] - weight) / se
    figure = (f"weights {np.round(MIX_WEIGHTS.tolist(), 2).tolist()}: annealed chain's shares "
              f"{np.round(annealed_shares, 4).tolist()} "
              f"(small mode z {z_annealed:+.1f}), plain chain's {np.round(plain_shares, 4).tolist()} "
              f"(z {z_plain:+.1f}); SE {se:.4f}, n {n}; annealed at NC-LQL's default schedule (not asserted): "
              f"{np.round(mode_shares(at_defaults, math.sqrt(MIX_SD**2 + default.sigma_min**2)), 4).tolist()}")
    print(f"\n{figure}")
    assert abs(z_annealed) < Z, figure
    assert abs(z_plain) > Z, figure
