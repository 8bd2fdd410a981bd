"""Claim: the trained agent shipped in tests/results/agent/ (README "Watch a trained agent": NC-LQL, Hopper-v4, seed 4,
its critic after 1M env steps) loads with --eval-checkpoint as README runs it, and hops with no training: its episodes
score far above an untrained critic's (194.0, its run's first evaluation) and uniform-random actions' (about 20).
Measured here (Intel Xeon, eager): 3 episodes, eval seed 0, 10 s."""
import os

import torch

import nclql_continuous_action as nclql
from tests.conftest import ROOT

AGENT = os.path.join(ROOT, "tests", "results", "agent", "hopper_nclql_seed4.pt")


def test_the_shipped_agent_is_a_critic_only_1m_checkpoint_of_its_run():
    checkpoint = torch.load(AGENT, map_location="cpu", weights_only=True)
    assert os.path.getsize(AGENT) < 4 * 2**20, f"{os.path.getsize(AGENT) / 2**20:.1f} MiB: strip it to the critic"
    assert {"critic_target", "optimizer", "replay_buffer"}.isdisjoint(checkpoint), sorted(checkpoint)
    run = checkpoint["algorithm"], checkpoint["args"]["env_id"], checkpoint["args"]["seed"]
    assert run == ("nclql", "Hopper-v4", 4), run
    assert checkpoint["learning_step"] >= 1_000_000, checkpoint["learning_step"]
    assert checkpoint["eval_returns"][-1][1] > 1000, checkpoint["eval_returns"]


def test_the_shipped_agent_evaluates_without_training_and_hops(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = nclql.main(["--eval-checkpoint", AGENT, "--eval-episodes", "3", "--no-compile", "--no-cuda"])
    out = capsys.readouterr().out
    assert code == 0 and "over 3 episodes" in out, out
    mean_return = float(out.split("return ")[1].split(" ")[0])
    assert mean_return > 500, f"the shipped agent returned {mean_return} (uniform-random actions: about 20)"
    assert not os.path.exists(tmp_path / "runs"), "evaluating a checkpoint must write nothing"
