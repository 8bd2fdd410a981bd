"""Claim: the two scripts share one harness. Everything outside the method (environment, buffer, evaluation, the
sampler's statistics, tuning w, the loop, checks and checkpoints, the command line) is the same text in both, so that
`diff lql_continuous_action.py nclql_continuous_action.py` reads as what noise conditioning adds."""
import ast
import os

from tests.conftest import ROOT

SCRIPTS = ("lql_continuous_action.py", "nclql_continuous_action.py")
# The method, which may differ: the options from this comment in Args up to the next group, and the code from the
# critic's banner to the banner that ends the method
METHOD_REGIONS = [("    # The method: Langevin sampler", "    # Environment and protocol"),
                  ("# CRITIC", "# THE METHOD ENDS HERE")]
METHOD_FUNCTIONS = {"trace_groups", "method_checks"}  # the statistics' steps by level or block; the method's checks
NAMES = ("wandb_project_name: str = ", "NETWORK_OPTIONS = ", "ALGORITHM = ")  # lines that name the algorithm


def harness_lines(name: str) -> list[tuple[int, str]]:
    """(line number, text) of each line outside the method, the header comment and the lines that name the algorithm."""
    with open(os.path.join(ROOT, name)) as f:
        text = f.read()
    lines = text.splitlines()
    skip = set(range(next(i for i, line in enumerate(lines) if line.startswith("import "))))
    for start, end in METHOD_REGIONS:
        first = lines.index(start)
        last = next(i for i in range(first + 1, len(lines)) if lines[i].startswith(end))
        skip |= set(range(first, last))
    for node in ast.parse(text).body:
        if getattr(node, "name", None) in METHOD_FUNCTIONS:
            skip |= set(range(node.lineno - 1, node.end_lineno))
    return [(i + 1, line) for i, line in enumerate(lines)
            if i not in skip and not line.strip().startswith(NAMES)]


def test_everything_outside_the_method_is_the_same_text_in_both_scripts():
    lql, nclql = (harness_lines(name) for name in SCRIPTS)
    for (lql_no, lql_line), (nclql_no, nclql_line) in zip(lql, nclql):
        assert lql_line == nclql_line, (f"the harness differs: {SCRIPTS[0]}:{lql_no} {lql_line.strip()!r}, "
                                        f"{SCRIPTS[1]}:{nclql_no} {nclql_line.strip()!r}")
    assert len(lql) == len(nclql), f"one harness is longer: {len(lql)} against {len(nclql)} lines"
    assert len(lql) > 400, f"only {len(lql)} harness lines compared: a region marker may have moved"


def test_the_method_reads_alone_up_to_the_update():
    """From the top through update_critic, no line names the fast path, the statistics, w tuning or checkpoints, but
    for the one comment at the sampler's trace hook, which says why those lines serve the statistics."""
    outside = ("compile", "bf16", "autotune", "tune_w", "checkpoint", "sampler_statistics", "probe")
    for name in SCRIPTS:
        with open(os.path.join(ROOT, name)) as f:
            lines = f.read().splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("# ENVIRONMENT"))
        end = next(i for i, line in enumerate(lines) if line.startswith("# THE METHOD ENDS HERE"))
        found = [(i + 1, line.strip()) for i, line in enumerate(lines[start:end], start) if any(
            word in line for word in outside) and not line.strip().startswith("if trace is not None:  #")]
        assert not found, f"{name}: the method's part names what wraps it: {found}"
