"""Write tests/golden/nclql_authors.npz: NC-LQL's numbers computed by the authors' own JAX code.

tests/test_golden.py loads these parameters into NoiseConditionedTwinCritic, replays these random draws and must
reproduce these outputs. Nothing of the authors' code is in this repository; only the numbers it produced.

What it runs (ku-dmlab/NCLQL at commit c4781a52ca1bd4f1e5375884e703fe698b0edd99): `create_NCLQL_net` for two pairs
of critics (online, and targets from another key, as they are mid-training), `NoiseConditionedQNet` at several
levels, `NCLQLAgent.get_action` with 1 and 4 particles (and 1 without gradient normalisation), and NUM_UPDATES calls
of `NCLQL.update` in a row. Hidden layers are 64 wide instead of 256 so that the file stays small (about 1 MB); every
other setting is the authors' default. The draws are those their code makes from each key: the key splits below
follow theirs, and the test fails if they do not.

Run it in a scratch virtual environment, outside this repository (these versions run their code on CPU):

    python3 -m venv /tmp/jaxvenv
    /tmp/jaxvenv/bin/pip install jax==0.4.27 jaxlib==0.4.27 dm-haiku==0.0.12 optax==0.2.2 numpy==1.26.4 dill==0.4.1
    git clone https://github.com/ku-dmlab/NCLQL /tmp/NCLQL
    git -C /tmp/NCLQL checkout c4781a52ca1bd4f1e5375884e703fe698b0edd99
    /tmp/jaxvenv/bin/python tests/golden/make_nclql_golden.py --authors-repo /tmp/NCLQL
"""
import argparse
import dataclasses
import os
import sys

import numpy as np

OBS_DIM, ACT_DIM, HIDDEN, BATCH = 11, 3, 64, 16
NUM_LEVELS, STEPS_PER_LEVEL = 10, 2
NUM_UPDATES = 4
# Haiku names the six hk.Linear of NoiseConditionedQNet in call order: the level embedding's two, then the MLP's four.
HAIKU_LAYERS = ["linear", "linear_1", "linear_2", "linear_3", "linear_4", "linear_5"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors-repo", required=True, help="a checkout of ku-dmlab/NCLQL at the commit above")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "nclql_authors.npz"))
    cli = parser.parse_args()
    sys.path.insert(0, cli.authors_repo)
    import jax
    import jax.numpy as jnp
    from relax.algorithm.nclql import NCLQL
    from relax.network.nclql import create_NCLQL_net
    from relax.utils.experience import Experience

    out = {}

    def put_params(prefix, params):
        for layer in HAIKU_LAYERS:
            for name in ("w", "b"):
                out[f"{prefix}.{layer}.{name}"] = np.asarray(params[f"noise_conditioned_q_net/{layer}"][name])

    def put_all_params(prefix, params):
        for member in ("q1", "q2", "target_q1", "target_q2"):
            put_params(f"{prefix}.{member}", getattr(params, member))

    agent, online = create_NCLQL_net(jax.random.PRNGKey(0), OBS_DIM, ACT_DIM, (HIDDEN,) * 3)
    _, other = create_NCLQL_net(jax.random.PRNGKey(1), OBS_DIM, ACT_DIM, (HIDDEN,) * 3)
    params = online._replace(target_q1=other.q1, target_q2=other.q2)
    put_all_params("init", params)

    rng = np.random.default_rng(0)

    def random_batch():
        return dict(obs=rng.normal(size=(BATCH, OBS_DIM)).astype(np.float32),
                    action=rng.uniform(-1, 1, size=(BATCH, ACT_DIM)).astype(np.float32),
                    reward=(3 * rng.normal(size=BATCH)).astype(np.float32),
                    next_obs=rng.normal(size=(BATCH, OBS_DIM)).astype(np.float32),
                    done=rng.random(BATCH) < 0.25)

    # Q1 and Q2 at whole-batch levels and at a mixed batch of levels.
    probe = random_batch()
    out["q.obs"], out["q.action"] = probe["obs"], probe["action"]
    out["q.levels"] = np.array([0, 3, NUM_LEVELS - 1])
    out["q.mixed_levels"] = np.arange(BATCH) % NUM_LEVELS
    out["q.values"] = np.stack([np.stack([agent.q(params[m], probe["obs"], probe["action"], jnp.full(BATCH, level))
                                          for m in (0, 1)]) for level in out["q.levels"]])
    out["q.mixed_values"] = np.stack([agent.q(params[m], probe["obs"], probe["action"], out["q.mixed_levels"])
                                      for m in (0, 1)])

    def chain_draws(key, num_particles):
        """The uniform start (in [0, 1): their x is 2u - 1) and the L*T Langevin noises get_action draws from key."""
        _, noise_key = jax.random.split(key)  # get_action: key, noise_key = split(key)
        particle_keys = [noise_key] if num_particles == 1 else list(jax.random.split(noise_key, num_particles))
        starts, noises = [], []
        for particle_key in particle_keys:
            x_key, step_key = jax.random.split(particle_key)  # AnnealedLangevinDynamics.sample
            u = jax.random.uniform(x_key, (BATCH, ACT_DIM))
            assert np.array_equal(2 * u - 1, jax.random.uniform(x_key, (BATCH, ACT_DIM), minval=-1.0, maxval=1.0))
            starts.append(u)
            noises.append(jax.random.normal(step_key, (NUM_LEVELS, STEPS_PER_LEVEL, BATCH, ACT_DIM)))
        return np.stack(starts), np.stack(noises).reshape(num_particles, -1, BATCH, ACT_DIM)

    # The sampler (their get_action) on the online critics.
    out["act.obs"] = probe["obs"]
    for case, num_particles, grad_norm in (("n1", 1, True), ("n4", 4, True), ("n1_raw", 1, False)):
        case_agent = dataclasses.replace(agent, num_particles=num_particles, q_grad_norm=grad_norm)
        key = jax.random.PRNGKey(10 + num_particles + int(grad_norm))
        out[f"act.{case}.start"], out[f"act.{case}.noise"] = chain_draws(key, num_particles)
        out[f"act.{case}.actions"] = np.asarray(case_agent.get_action(key, (params.q1, params.q2), probe["obs"]))

    # NUM_UPDATES updates in a row: TD step, smoothing step, Polyak, one Adam state per critic over both steps.
    algorithm = NCLQL(agent, params)
    for i in range(NUM_UPDATES):
        batch = random_batch()
        key = jax.random.PRNGKey(100 + i)
        _, key1, key2, key3 = jax.random.split(key, 4)  # NCLQL.update's split
        start, noise = chain_draws(key1, 1)
        for name, value in batch.items():
            out[f"update{i}.{name}"] = value
        out[f"update{i}.next_start"], out[f"update{i}.next_noise"] = start, noise
        out[f"update{i}.levels"] = np.asarray(jax.random.randint(key2, (BATCH,), minval=0, maxval=NUM_LEVELS - 1))
        out[f"update{i}.smoothing_noise"] = np.asarray(jax.random.normal(key3, (BATCH, ACT_DIM)))
        info = algorithm.update(key, Experience(**batch))
        out[f"update{i}.td_loss"] = np.array([info["td_q1_loss"], info["td_q2_loss"]])
        out[f"update{i}.smoothing_loss"] = np.array([info["qt1_loss"], info["qt2_loss"]])
        put_all_params(f"after{i}", algorithm.state.params)

    out = {name: np.asarray(value) for name, value in out.items()}
    np.savez_compressed(cli.out, **out)
    print(f"wrote {cli.out}: {len(out)} arrays, {os.path.getsize(cli.out) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
