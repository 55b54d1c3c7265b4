"""Run a public peer and the product on the same set-up, side by side; print the table.

Each pair (one rule, one seed) starts the peer script (in the torch environment given
by ``--peer-python``) and the product run (``python -m experiments.train``, this
interpreter) at the same time, so both see the same machine load; the pair's outputs
go to ``--out``/<suite>/<row>_s<seed>/ and a finished pair is not run again. The
table (Markdown) gives, per row, the test accuracy after the last epoch (mean +- std
over seeds, n), the seconds per training epoch (epochs after the first: the first
holds the product's compilation; evaluation excluded on both sides) and the
product / peer ratio of the seconds. docs/peers.md has the measured tables::

    python benchmarks/peers/side_by_side.py mlp --seeds 0 1 2 \
        --peer-python /path/to/torch-venv/bin/python \
        --peer-dir /path/to/biotorch --out outputs/peers
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
PREFIX = "PEER_RESULT "
FA_MODES = ("usf", "brsf", "frsf")
BIOTORCH_ROWS = {  # row -> (biotorch --mode, product overrides)
    "bp": ("backpropagation", ["rule=bp"]),
    "fa": ("fa", ["rule=fa", "rule.feedback=random"]),
    **{m: (m, ["rule=fa", f"rule.feedback={m}"]) for m in FA_MODES},
    "dfa": ("dfa", ["rule=dfa"]),
}
SUITES = {  # suite -> (peer script, its arguments, product experiment, rows)
    "mlp": (
        "biotorch_run.py",
        ["--model", "mlp", "--epochs", "2", "--train-subset", "10000"],
        "peers_biotorch_mlp",
        BIOTORCH_ROWS,
    ),
    "lenet": (
        "biotorch_run.py",
        ["--model", "lenet", "--lr", "1e-3", "--weight-decay", "1e-3"]
        + ["--epochs", "2", "--train-subset", "10000"],
        "peers_biotorch_lenet",
        BIOTORCH_ROWS,
    ),
    "ff": (
        "loewex_ff_run.py",
        ["--epochs", "2", "--train-subset", "12000"],
        "peers_ff_loewex_fashion_mnist",
        {"ff": (None, ["rule=ff"])},
    ),
}


def pair_commands(args, row: str, seed: int, run_dir: Path) -> tuple[list, list]:
    script, peer_args, experiment, rows = SUITES[args.suite]
    mode, overrides = rows[row]
    peer = [args.peer_python, str(HERE / script), "--peer-dir", args.peer_dir]
    peer += peer_args + ["--seed", str(seed), "--threads", str(args.threads)]
    peer += ["--mode", mode] if mode else []
    product = [sys.executable, "-m", "experiments.train", f"experiment={experiment}"]
    product += overrides + [f"seed={seed}", f"hydra.run.dir={run_dir / 'product'}"]
    return peer, product + args.override


def run_pair(args, row: str, seed: int) -> dict:
    run_dir = Path(args.out) / args.suite / f"{row}_s{seed}"
    done = run_dir / "pair.json"
    if done.exists():
        return json.loads(done.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    peer_cmd, product_cmd = pair_commands(args, row, seed, run_dir)
    nice = ["nice", "-n", str(args.nice)]
    print("peer:   ", shlex.join(peer_cmd), "\nproduct:", shlex.join(product_cmd))
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    with (
        open(run_dir / "peer.log", "w") as pl,
        open(run_dir / "product.log", "w") as ql,
    ):
        procs = [
            subprocess.Popen(nice + peer_cmd, stdout=pl, stderr=subprocess.STDOUT),
            subprocess.Popen(
                nice + product_cmd, stdout=ql, stderr=subprocess.STDOUT, env=env
            ),
        ]
        codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"{row} seed {seed}: exit codes {codes}; see {run_dir}/*.log")
    peer = next(
        json.loads(line[len(PREFIX) :])
        for line in (run_dir / "peer.log").read_text().splitlines()
        if line.startswith(PREFIX)
    )
    res = json.loads((run_dir / "product" / "results.json").read_text())
    product = {
        "test_accuracy": res["final"]["test_accuracy"],
        "epoch_seconds": [h["epoch_seconds"] for h in res["history"]],
        **{k: v for k, v in res["final"].items() if k.startswith("test_accuracy/")},
    }
    pair = {
        "row": row,
        "seed": seed,
        "peer": peer,
        "product": product,
        "load": os.getloadavg()[0],
        "commands": [peer_cmd, product_cmd],
    }
    done.write_text(json.dumps(pair, indent=1))
    return pair


def steady(seconds: list[float]) -> float:
    """Mean seconds per epoch after the first (all of them with one epoch)."""
    tail = seconds[1:] or seconds
    return sum(tail) / len(tail)


def table(pairs: list[dict]) -> str:
    """Markdown: per row, accuracy mean +- std (n), s/epoch, product/peer ratio."""
    recs, extra = [], []
    for p in pairs:  # FF: the product's read-out beside its goodness headline
        if "test_accuracy/readout" in p["product"]:
            product = dict(
                p["product"], test_accuracy=p["product"]["test_accuracy/readout"]
            )
            extra.append(dict(p, row=f"{p['row']} read-out", product=product))
    for p in pairs + extra:
        for side in ("peer", "product"):
            recs.append(
                {
                    "row": p["row"],
                    "side": side,
                    "acc": 100 * p[side]["test_accuracy"],
                    "s": steady(p[side]["epoch_seconds"]),
                    "load": p["load"],
                }
            )
    df = pd.DataFrame(recs)
    g = df.groupby(["row", "side"], sort=False).agg(
        mean=("acc", "mean"),
        std=("acc", "std"),
        n=("acc", "size"),
        s=("s", "mean"),
        load=("load", "mean"),
    )
    lines = [
        "| row | peer acc % | product acc % | n | peer s/epoch | "
        "product s/epoch | product/peer s | load (1 min) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in dict.fromkeys(df["row"]):
        a, b = g.loc[(row, "peer")], g.loc[(row, "product")]
        lines.append(
            f"| {row} | {a['mean']:.2f} ± {a['std']:.2f} | {b['mean']:.2f} ± "
            f"{b['std']:.2f} | {int(a['n'])} | {a['s']:.1f} | {b['s']:.1f} | "
            f"{b['s'] / a['s']:.2f} | {a['load']:.1f} |"
        )
    return "\n".join(lines).replace("± nan", "± –")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("suite", choices=sorted(SUITES))
    p.add_argument("--rows", nargs="+", default=None, help="default: every row")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--peer-python", default=os.environ.get("BPA_PEER_PYTHON", "python"))
    p.add_argument("--peer-dir", required=True, help="the peer's fetched source")
    p.add_argument("--out", default="outputs/peers")
    p.add_argument("--threads", type=int, default=1, help="the peer's torch threads")
    p.add_argument("--nice", type=int, default=10)
    p.add_argument("--override", nargs="*", default=[], help="extra product overrides")
    args = p.parse_args(argv)
    rows = args.rows or list(SUITES[args.suite][3])
    pairs = [run_pair(args, r, s) for s in args.seeds for r in rows]
    print(table(pairs))


if __name__ == "__main__":
    main()
