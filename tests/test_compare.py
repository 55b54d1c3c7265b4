"""experiments.compare: table numbers against the results.json files, diverged and
failed runs, paper column, row / column labels, formats, plots, and bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import statistics

import pytest

from bp_alternatives.compare import main
from bp_alternatives.experiment import run
from bp_alternatives.report.render import to_csv, to_latex, to_markdown
from bp_alternatives.report.runs import CompareError, load_runs
from bp_alternatives.report.table import build_table
from tests.conftest import compose_cfg

TINY = [
    "model.hidden=[8]",
    "trainer.epochs=2",
    "trainer.batch_size=256",
]


def fake_results(
    path,
    rule: str,
    seed: int,
    test_accuracy: float | None,
    status: str = "ok",
    dataset: str = "digits",
    epochs: int = 3,
    config: dict | None = None,
    stages: int = 2,
) -> dict:
    """A results.json following the DESIGN.md contract, written to ``path``."""
    history = []
    for e in range(1, epochs + 1):
        acc = None if test_accuracy is None else test_accuracy * e / epochs
        history.append(
            {
                "epoch": e,
                "train_loss": 2.0 / e,
                "train_accuracy": acc,
                "test_loss": 2.1 / e,
                "test_accuracy": acc,
                "alignment_deg": [10.0 * (s + 1) / e for s in range(stages - 1)]
                + [0.0],
                "grad_norm": [10.0 ** -(s + e) for s in range(stages)],
            }
        )
    cfg = {
        "rule": {"name": rule},
        "data": {"name": dataset},
        "model": {"hidden": [8], "activation": "tanh"},
        "seed": seed,
    }
    for k, v in (config or {}).items():
        node = cfg
        *parents, leaf = k.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    res = {
        "rule": rule,
        "dataset": dataset,
        "seed": seed,
        "status": status,
        "final": {
            k: history[-1][k]
            for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
        },
        "history": history,
        "examples_per_second": 1000.0 * (seed + 1),
        "config": cfg,
    }
    if status == "diverged":
        res["final"]["train_loss"] = None
        res["diverged_epoch"] = epochs
    if status == "failed":  # what bp_alternatives.sweep.failed_results writes
        res.update(final={}, history=[], error="ValueError: boom")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "results.json"), "w") as f:
        json.dump(res, f)
    return res


# ------------------------------------------------------------------ from real runs


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A 2-rule x 2-seed 'sweep' of real tiny runs, laid out as Hydra names them."""
    root = tmp_path_factory.mktemp("sweep")
    for rule in ("bp", "fa"):
        for seed in (0, 1):
            cfg = compose_cfg([f"rule={rule}", f"seed={seed}", *TINY])
            run(cfg, out_dir=str(root / f"rule={rule},seed={seed}"))
    return root


def _read_errors(root) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for d in sorted(os.listdir(root)):
        p = os.path.join(root, d, "results.json")
        if os.path.exists(p):
            with open(p) as f:
                r = json.load(f)
            out.setdefault(r["rule"], []).append(
                100 * (1 - r["final"]["test_accuracy"])
            )
    return out


def test_table_numbers_match_the_results_files(sweep_dir, capsys):
    errors = _read_errors(sweep_dir)
    assert {k: len(v) for k, v in errors.items()} == {"bp": 2, "fa": 2}
    table = build_table(load_runs([str(sweep_dir)]))
    assert table.rows == ["bp", "fa"] and table.columns == ["digits"]
    for rule, errs in errors.items():
        mean, std = table.cells[(rule, "digits")].test_error
        assert mean == pytest.approx(statistics.mean(errs), abs=1e-9)
        assert std == pytest.approx(statistics.stdev(errs), abs=1e-9)

    out = tmp = sweep_dir / "cmp"
    assert main([str(sweep_dir), "--plots-dir", str(tmp)]) == 0
    printed = capsys.readouterr().out
    for rule, errs in errors.items():
        cell = f"{statistics.mean(errs):.2f} ± {statistics.stdev(errs):.2f} (n=2)"
        assert f"| {rule} | {cell} |" in printed
    assert f"plots in {out}/" in printed
    with open(out / "table.csv") as f:
        rows = {r["row"]: r for r in csv.DictReader(f)}
    for rule, errs in errors.items():
        assert float(rows[rule]["test_error_mean"]) == pytest.approx(
            statistics.mean(errs), rel=1e-9
        )
        assert rows[rule]["n_ok"] == "2" and rows[rule]["seeds"] == "0 1"
    # bp's direction is the gradient: final alignment 0 degrees in every stage
    assert set(rows["bp"]["final_alignment_deg"].split("/")) == {"0"}
    for kind in ("learning_curves", "alignment", "grad_norm"):
        for ext, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
            p = out / f"{kind}_digits.{ext}"
            assert p.read_bytes()[:4] == magic, p
    assert (out / "table.tex").read_text().startswith(r"\begin{table}")
    # every table and plot went through a temp file renamed into place
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]


# --------------------------------------------------------------- synthesized runs


def test_diverged_and_failed_runs_are_counted_not_averaged(tmp_path):
    fake_results(tmp_path / "a0", "bp", 0, 0.90)
    fake_results(tmp_path / "a1", "bp", 1, 0.80)
    fake_results(tmp_path / "a2", "bp", 2, None, status="diverged")
    fake_results(tmp_path / "b0", "fa", 0, None, status="diverged")
    fake_results(tmp_path / "b1", "fa", 1, None, status="diverged")
    fake_results(tmp_path / "c0", "dfa", 0, None, status="failed")
    table = build_table(load_runs([str(tmp_path)]))
    bp = table.cells[("bp", "digits")]
    assert bp.n_diverged == 1 and len(bp.ok) == 2
    mean, std = bp.test_error
    assert mean == pytest.approx(statistics.mean([10.0, 20.0]))
    assert std == pytest.approx(statistics.stdev([10.0, 20.0]))
    md = to_markdown(table)
    assert "| bp | 15.00 ± 7.07 (n=2), 1 diverged |" in md
    assert "| fa | 2 diverged |" in md
    assert "| dfa | 1 failed |" in md
    assert "nan" not in md.lower()
    rows = {r["row"]: r for r in csv.DictReader(io.StringIO(to_csv(table)))}
    assert rows["fa"]["test_error_mean"] == "" and rows["fa"]["n_diverged"] == "2"
    assert rows["dfa"]["n_failed"] == "1"


def test_paper_column_variants_and_config_columns(tmp_path):
    paper = {
        "source": "Nøkland (2016), Table 1",
        "test_error": {"bp": 1.48, "fa": 1.85},
        "verified": True,
        "note": "Selected on a validation split.",
    }
    for seed, acc in ((0, 0.99), (1, 0.97)):
        fake_results(
            tmp_path / f"bp{seed}",
            "bp",
            seed,
            acc,
            config={"paper": paper, "rule.remat": False},
        )
        fake_results(
            tmp_path / f"bpr{seed}",
            "bp",
            seed,
            acc - 0.01,
            config={"paper": paper, "rule.remat": True},
        )
        fake_results(
            tmp_path / f"fa{seed}", "fa", seed, acc - 0.02, config={"paper": paper}
        )
        fake_results(
            tmp_path / f"w{seed}", "fa", seed, acc - 0.1, config={"model.hidden": [800]}
        )
        fake_results(
            tmp_path / f"named{seed}",
            "fa",
            seed,
            acc - 0.2,
            config={"column": "my setup"},
        )
    table = build_table(load_runs([str(tmp_path)]), extras=())
    assert table.rows == ["bp (remat=false)", "bp (remat=true)", "fa"]
    wide, narrow = "digits (model.hidden=[800])", "digits (model.hidden=[8])"
    assert table.columns == [wide, narrow, "my setup"]
    assert table.paper_columns == [narrow]
    assert table.cells[("bp (remat=false)", narrow)].paper[0] == 1.48
    assert table.cells[("bp (remat=true)", narrow)].paper[0] == 1.48  # by rule name
    assert table.cells[("fa", narrow)].paper[0] == 1.85
    md = to_markdown(table).splitlines()
    assert md[0] == f"| rule | {wide} | {narrow} | {narrow}: paper | my setup |"
    assert md[2:5] == [
        # errors (%) 1 and 3: mean 2, sample std sqrt(2)
        "| bp (remat=false) | – | 2.00 ± 1.41 (n=2) | 1.48 | – |",
        "| bp (remat=true) | – | 3.00 ± 1.41 (n=2) | 1.48 | – |",
        "| fa | 12.00 ± 1.41 (n=2) | 4.00 ± 1.41 (n=2) | 1.85 | 22.00 ± 1.41 (n=2) |",
    ]
    assert "Paper: Nøkland (2016), Table 1." in table.caption
    assert "Selected on a validation split." in table.caption
    tex = to_latex(table)
    assert r"$2.00 \pm 1.41$ (2)" in tex and r"\%" in tex and "±" not in tex


def test_extra_columns(tmp_path):
    for seed in (0, 1):
        fake_results(tmp_path / f"r{seed}", "manual_bp", seed, 0.9, stages=3)
    runs = load_runs([str(tmp_path)])
    # examples/s is machine-dependent: only on request (--extras speed)
    assert "examples/s" not in to_markdown(build_table(runs))
    md = to_markdown(build_table(runs, extras=("speed", "alignment")))
    header, _, row = md.splitlines()[:3]
    assert header == ("| rule | digits | examples/s | final alignment (deg/stage) |")
    # examples/s: mean of 1000 and 2000; alignment at epoch 3: 10/3, 20/3, 0
    assert row == "| manual_bp | 10.00 ± 0.00 (n=2) | 1,500 | 3/7/0 |"
    assert r"manual\_bp" in to_latex(build_table(load_runs([str(tmp_path)])))


# --------------------------------------------------------------------- bad input


def test_no_results_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(CompareError, match="no results.json under"):
        load_runs([str(tmp_path)])
    assert main([str(tmp_path / "missing")]) == 2
    assert "missing: no such directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected an object"),
        ('{"rule": "bp", "final": {}, "history": []}', "'status' is None"),
        ('{"rule": "bp", "status": "ok", "history": []}', "'final' missing"),
    ],
)
def test_malformed_results_name_the_file(tmp_path, capsys, content, message):
    fake_results(tmp_path / "good", "bp", 0, 0.9)
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    bad.write_text(content)
    with pytest.raises(CompareError, match=message) as err:
        load_runs([str(tmp_path)])
    assert str(bad) in str(err.value)
    assert main([str(tmp_path), "--no-plots"]) == 2
    assert str(bad) in capsys.readouterr().err


def test_a_plot_that_fails_half_written_leaves_the_old_file(tmp_path):
    """style.save renders to a temp file and renames it: a crash while rendering
    keeps the previous plot whole under its name and leaves no temp file."""
    from bp_alternatives.report.style import save

    old = tmp_path / "curves.png"
    old.write_bytes(b"\x89PNG the previous, complete plot")

    class Crashing:
        def savefig(self, path, **kw):
            with open(path, "wb") as f:
                f.write(b"\x89PNG half")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save(Crashing(), str(tmp_path), "curves")
    assert old.read_bytes() == b"\x89PNG the previous, complete plot"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]
