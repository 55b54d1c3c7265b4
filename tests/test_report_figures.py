"""The protocol's figures: files and captions, panels only for rules whose angle to
the gradient is not identically 0, the search figure."""

from __future__ import annotations

import json

from bp_alternatives.report import figures, style
from bp_alternatives.report.runs import load_runs
from tests.test_compare import fake_results


def test_figures_and_captions(tmp_path):
    for rule in ("bp", "fa", "dfa"):
        for seed in (0, 1, 2):
            res = fake_results(tmp_path / "runs" / f"{rule}{seed}", rule, seed, 0.9)
            if rule == "bp":  # the exact gradient: angle 0 everywhere
                for e in res["history"]:
                    e["alignment_deg"] = [0.0 for _ in e["alignment_deg"]]
                path = tmp_path / "runs" / f"{rule}{seed}" / "results.json"
                path.write_text(json.dumps(res))
    runs = load_runs([str(tmp_path / "runs")])
    trials = [
        {"number": i, "params": {"optim.lr": lr}, "value": v, "state": "COMPLETE"}
        for i, (lr, v) in enumerate([(1e-3, 0.9), (1e-2, 0.95), (3e-2, None)])
    ]
    found = {
        r: {
            "metric": "val_accuracy",
            "trials": trials,
            "chosen": trials[1],
            "budget": {"trials": 3, "epochs": 2},
            "space": {"optim.lr": {"low": 1e-4, "high": 1e-1, "log": True}},
        }
        for r in ("bp", "fa")
    }
    out = tmp_path / "fig"
    paths = figures.write_all(runs, found, str(out))
    names = {p.rsplit("/", 1)[1] for p in paths}
    for fig in ("test_error", "alignment", "grad_norm", "search"):
        assert {f"{fig}.png", f"{fig}.pdf", f"{fig}.txt"} <= names
    caption = (out / "alignment.txt").read_text()
    assert "Not drawn: bp" in caption and "95% confidence interval" in caption
    assert "Stage(s) 2 not drawn" in caption  # the read-out's angle is 0
    assert "ringed: the chosen trial" in (out / "search.txt").read_text()


def test_alignment_panels_skip_zero_rules_and_share_limits(tmp_path, monkeypatch):
    plt = style.pyplot()
    for rule in ("bp", "fa", "dfa"):
        res = fake_results(tmp_path / rule, rule, 0, 0.9, stages=3)
        if rule == "bp":
            for e in res["history"]:
                e["alignment_deg"] = [0.01, 0.0, 0.0]  # rounding, not an angle
            (tmp_path / rule / "results.json").write_text(json.dumps(res))
    groups = figures.by_rule(load_runs([str(tmp_path)]))
    assert list(groups) == ["bp", "fa", "dfa"]  # the table's rule order
    captured = {}
    real_save = style.save

    def save(fig, out_dir, name, caption):
        captured["axes"] = [a for a in fig.axes if a.get_visible()]
        return real_save(fig, out_dir, name, caption)

    monkeypatch.setattr(style, "save", save)
    figures.alignment(plt, groups, str(tmp_path / "fig"))
    axes = captured["axes"]
    assert [a.get_title() for a in axes] == ["fa", "dfa"]
    assert {a.get_ylim() for a in axes} == {(0.0, 100.0)}
    assert axes[0].get_ylabel() == "angle to the exact gradient (°)"
    assert any(list(line.get_ydata()) == [90, 90] for line in axes[0].get_lines())


def test_search_panels_label_every_learning_rate_axis(tmp_path, monkeypatch):
    """With 4 rules (3 + 1 panels), the panels above the hidden spare slots keep
    their learning-rate tick labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [
        {"number": i, "params": {"optim.lr": lr}, "value": 0.9, "state": "COMPLETE"}
        for i, lr in enumerate([1e-3, 1e-2])
    ]
    found = {
        r: {
            "metric": "val_accuracy",
            "trials": trials,
            "chosen": trials[0],
            "budget": {"trials": 2, "epochs": 1},
        }
        for r in ("bp", "fa", "dfa", "sg")
    }
    seen = []
    monkeypatch.setattr(plt, "close", lambda fig: seen.append(fig))
    figures.search(plt, found, str(tmp_path))
    axes = [ax for ax in seen[0].axes if ax.get_visible()]
    assert len(axes) == 4
    seen[0].canvas.draw()
    for ax in axes:
        assert any(t.get_visible() and t.get_text() for t in ax.get_xticklabels())
