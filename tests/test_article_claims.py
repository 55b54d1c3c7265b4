"""scripts/article_claims.py (compiled cost and memory of the rules) and the paper
column's "(approx.)" marker for published numbers not read in their source."""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

from bp_alternatives.report.render import to_markdown
from bp_alternatives.report.runs import load_runs
from bp_alternatives.report.table import build_table
from tests.test_compare import fake_results

_PATH = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "scripts", "article_claims.py"
)
_spec = importlib.util.spec_from_file_location("_article_claims_script", _PATH)
claims = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = claims
_spec.loader.exec_module(claims)

TINY_MLP = (["model=mlp", "model.hidden=[16,16]"], (8,), 4)


@pytest.mark.parametrize(
    "verified, marked", [(True, False), (False, True), (None, True)]
)
def test_paper_numbers_not_read_in_their_source_print_approx(
    tmp_path, verified, marked
):
    paper = {"source": "Someone (2016), Table 1", "test_error": {"bp": 1.5}}
    if verified is not None:
        paper["verified"] = verified
    fake_results(tmp_path / "bp0", "bp", 0, 0.98, config={"paper": paper})
    table = build_table(load_runs([str(tmp_path)]), extras=())
    md = to_markdown(table)
    assert ("1.50 (approx.)" in md) is marked
    assert ("(approx.): a published number not read" in table.caption) is marked


def test_bp_direction_costs_about_three_forward_passes_in_xla_flops(monkeypatch):
    monkeypatch.setitem(claims.ARCHS, "tiny", TINY_MLP)
    row = claims.measure_cost("bp", "tiny")
    # forward: 2 matmuls + read-out; bp adds dW for each and the deltas below the top
    assert row["update_flops"] > row["forward_flops"]
    assert 2.0 < row["flops_ratio"] < 5.0
    assert row["cpu_ratio"] > 0 and row["update_wall_s"] > 0


def test_a_rule_that_refuses_the_model_is_recorded_not_raised(monkeypatch):
    cnn = (["model=cnn", "model.channels=[2]", "model.hidden=[]"], (8, 8, 1), 2)
    monkeypatch.setitem(claims.ARCHS, "tiny cnn", cnn)
    row = claims.measure_cost("ep", "tiny cnn")
    assert "error" in row and "flops_ratio" not in row


def test_bp_working_memory_grows_with_depth_and_ff_is_measured(monkeypatch):
    monkeypatch.setattr(claims, "MEMORY_WIDTH", 16)
    monkeypatch.setattr(claims, "MEMORY_BATCH", 64)
    shallow, deep = (claims.measure_memory("bp", d) for d in (1, 4))
    assert deep["temp_size_in_bytes"] > shallow["temp_size_in_bytes"]
    assert deep["activation_bytes"] == 64 * 16 * 4 * 4  # B * sum(widths) * 4 bytes
    assert claims.measure_memory("ff", 2)["temp_size_in_bytes"] > 0


def test_every_paper_block_says_whether_its_numbers_were_read_in_their_source():
    from pathlib import Path

    import yaml

    from tests.conftest import CONFIG_DIR

    unverified = {"nokland2016_mnist", "lillicrap2016", "jaderberg2017_mnist_fcn"}
    unverified |= {"hinton2022_ff_mnist"}  # docs/references.md, "Unverified"
    for path in sorted(Path(CONFIG_DIR, "experiment").glob("*.yaml")):
        paper = (yaml.safe_load(path.read_text()) or {}).get("paper")
        if paper is None:
            continue
        assert isinstance(paper.get("verified"), bool), path.name
        if path.stem in unverified:
            assert paper["verified"] is False, path.name


def _figures_module():
    sys.path.insert(0, os.path.dirname(_PATH))
    try:
        import claims_figures
    finally:
        sys.path.pop(0)
    return claims_figures


def test_scaling_series_averages_seeds_and_leaves_the_read_out_out(tmp_path):
    figures = _figures_module()
    for seed, acc in ((0, 0.9), (1, 0.8)):
        fake_results(tmp_path / f"fa{seed}", "fa", seed, acc, stages=3)
    series = figures._scaling_series(load_runs([str(tmp_path)]), len)
    errors, angles = series["fa"][1]  # fake runs: hidden [8], one hidden stage
    assert sorted(errors) == pytest.approx([10.0, 20.0])
    # last epoch (3) of the fake history: stages at 10/3 and 20/3 deg, read-out 0
    assert angles == pytest.approx([5.0, 5.0])


def test_cost_and_memory_figures_are_written(tmp_path):
    import json

    figures = _figures_module()
    cost = [
        {"rule": r, "arch": "MLP", "batch_size": 8, "flops_ratio": 2.5, "cpu_ratio": 3}
        for r in ("bp", "dfa")
    ] + [{"rule": "ep", "arch": "MLP", "batch_size": 8, "error": "unsupported"}]
    cost += [dict(c, arch="CNN") for c in cost]
    memory = [
        {
            "rule": r,
            "depth": d,
            "batch_size": 8,
            "temp_size_in_bytes": d * 2**20,
            "activation_bytes": d * 2**20,
        }
        for r in ("bp", "bp (remat)")
        for d in (2, 4)
    ]
    for name, rows in (("cost", cost), ("memory", memory)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"rows": rows}))
    out = tmp_path / "fig"
    paths = figures.plot_cost(str(tmp_path / "cost.json"), str(out))
    paths += figures.plot_memory([str(tmp_path / "memory.json")], str(out))
    assert {os.path.basename(p) for p in paths} >= {
        "claims_cost.png",
        "claims_memory.png",
    }
