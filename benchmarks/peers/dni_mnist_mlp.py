"""Side by side: the public DNI code's MLP example and ``rule=sg`` on Fashion-MNIST.

The peer is koz4k/dni-pytorch (``examples/mnist-mlp``: 784-256-256-10, Linear without
bias -> BatchNorm -> ReLU, the logits batch-normalised too, one synthesizer with one
hidden layer of 256 after the second hidden stage's BatchNorm, Adam 1e-3 for network
and synthesizer). It runs as a black box from the folder you fetched it into, in a
Python that has torch (``dni_peer_driver.py`` says what it adapts: the data source and
two PyTorch-0.3 idioms); no peer code is copied into this repository. The product side
is ``experiment=dni_mlp_fashion_mnist`` (the same set-up, three seeds in one compiled
program). Both read the same Fashion-MNIST IDX files.

    git clone https://github.com/koz4k/dni-pytorch /path/to/dni-pytorch
    python -m venv /path/to/venv && /path/to/venv/bin/pip install torch numpy
    python benchmarks/peers/dni_mnist_mlp.py --repo /path/to/dni-pytorch \
        --peer-python /path/to/venv/bin/python --out outputs/peers/dni

``--only peer`` / ``--only product`` runs one side; ``--variants dni cdni``,
``--seeds 0 1 2``, ``--epochs 3``, ``--batch-size 128``. Each run's test accuracy
after every epoch and its seconds per epoch go to ``<out>/<side>_<variant>.json``
(a re-run skips what is there) and the table to ``<out>/table.md``. Seconds per
epoch (epochs after the first): wall -- the peer's from its log's timestamps (training
and its test pass, one seed), the product's ``epoch_seconds`` (training only, the
seeds together in one program) and that per seed; CPU -- user + system seconds of the
process between epoch ends (all threads; the product's includes its per-epoch
evaluation of the train and test splits), per seed. On a shared machine the CPU
seconds are the comparable ones.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ACCURACY = re.compile(r"Accuracy: (?:tensor\()?(\d+)\)?/(\d+)")
PRODUCT_EPOCH = re.compile(r"epoch (\d+)/\d+ ")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far, all its threads (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _stream(cmd, mark_line, **kw) -> tuple[list, list, list, int]:
    """Run ``cmd``; at each output line ``mark_line(line)`` accepts (it returns a value
    to keep or ``True``), note wall and CPU time. (values, walls, cpus, returncode)."""
    values, walls, cpus = [], [], []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw
    ) as proc:
        for line in proc.stdout:
            v = mark_line(line)
            if v is not None:
                walls.append(time.perf_counter())
                try:
                    cpus.append(cpu_seconds(proc.pid))
                except OSError:  # not Linux, or the process has just ended
                    cpus.append(float("nan"))
                values.append(v)
    return values, walls, cpus, proc.returncode


def run_peer(args, variant: str, seed: int) -> dict:
    """One run of the peer's example; its test accuracy and seconds per epoch."""
    cmd = [args.peer_python, "-u", os.path.join(HERE, "dni_peer_driver.py"),
           "--repo", args.repo, "--data", args.data,
           "--threads", str(args.peer_threads), "--",
           "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
           "--seed", str(seed), "--log-interval", "100000", "--dni"]  # fmt: skip
    if variant == "cdni":
        cmd.append("--context")
    start = time.perf_counter()

    def mark(line):
        if line.startswith("Train Epoch:"):  # the epoch's first batch
            return True
        m = ACCURACY.search(line)
        return int(m[1]) / int(m[2]) if m else None

    values, walls, cpus, rc = _stream(cmd, mark)
    accs = [v for v in values if v is not True]
    if rc != 0 or len(accs) != args.epochs:
        raise RuntimeError(f"peer run failed ({rc}): {' '.join(cmd)}")
    # marks: start of epoch 1, end of 1, start of 2, end of 2, ...
    n = args.epochs
    return {"seed": seed, "test_accuracy": accs,
            "epoch_seconds": [walls[2 * i + 1] - walls[2 * i] for i in range(n)],
            "epoch_cpu_seconds": [cpus[2 * i + 1] - cpus[2 * i] for i in range(n)],
            "wall_seconds": time.perf_counter() - start, "command": cmd}  # fmt: skip


def run_product(args, variant: str) -> list[dict]:
    """``experiment=dni_mlp_fashion_mnist`` over the seeds in one program."""
    run_dir = os.path.join(os.path.abspath(args.out), f"product_{variant}_run")
    seeds = ",".join(str(s) for s in args.seeds)
    cmd = [sys.executable, "-m", "experiments.train",
           "experiment=dni_mlp_fashion_mnist",
           f"rule.conditioned={'true' if variant == 'cdni' else 'false'}",
           f"trainer.seeds=[{seeds}]", f"trainer.epochs={args.epochs}",
           f"trainer.batch_size={args.batch_size}", "trainer.progress=false",
           f"hydra.run.dir={run_dir}", *args.product_overrides]  # fmt: skip
    # the epoch lines go to the run's train.log: poll it, noting the process's CPU
    # time at the first line of each epoch's end (one line per seed)
    log_path = os.path.join(run_dir, "train.log")
    seen, cpus = set(), []
    with subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    ) as proc:
        while proc.poll() is None:
            time.sleep(0.5)
            text = open(log_path).read() if os.path.exists(log_path) else ""
            for m in PRODUCT_EPOCH.finditer(text):
                if m[1] not in seen:
                    seen.add(m[1])
                    cpus.append(cpu_seconds(proc.pid))
    if proc.returncode != 0:
        raise RuntimeError(f"product run failed ({proc.returncode}): {' '.join(cmd)}")
    # CPU seconds between epoch ends: epochs 2.. (epoch 1 also compiles)
    cpu = [b - a for a, b in zip(cpus, cpus[1:])]
    runs = []
    for path in sorted(glob.glob(os.path.join(run_dir, "seed=*", "results.json"))):
        r = json.load(open(path))
        runs.append(
            {
                "seed": r["seed"],
                "test_accuracy": [h["test_accuracy"] for h in r["history"]],
                "epoch_seconds": [h["epoch_seconds"] for h in r["history"]],
                "seeds_per_program": len(args.seeds),
                "epoch_cpu_seconds": cpu,
                "command": cmd,
            }
        )
    return runs


def _summary(runs: list[dict]) -> dict:
    final = [100 * r["test_accuracy"][-1] for r in runs]
    per_seed = runs[0].get("seeds_per_program", 1)
    # epochs after the first: no compilation (product) / warm caches (peer)
    steady = [s for r in runs for s in (r["epoch_seconds"][1:] or r["epoch_seconds"])]
    cpu = [s for r in runs for s in r.get("epoch_cpu_seconds", [])[-2:]]
    return {
        "cpu_per_epoch": statistics.mean(cpu) if cpu else float("nan"),
        "mean": statistics.mean(final),
        "std": statistics.stdev(final) if len(final) > 1 else 0.0,
        "n": len(final),
        "per_seed": final,
        "s_per_epoch": statistics.mean(steady),
        "s_per_epoch_per_seed": statistics.mean(steady) / per_seed,
    }


def per_seed(path: str) -> int:
    """Seeds that shared one program in the runs stored at ``path``."""
    return json.load(open(path))[0].get("seeds_per_program", 1)


def table(out: str, variants) -> str:
    rows = ["| variant | side | test accuracy % (mean ± std, n) | seeds | "
            "wall s / epoch | wall s / epoch / seed | CPU s / epoch / seed |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for v in variants:
        for side in ("peer", "product"):
            path = os.path.join(out, f"{side}_{v}.json")
            if not os.path.exists(path):
                continue
            s = _summary(json.load(open(path)))
            seeds = " / ".join(f"{a:.2f}" for a in s["per_seed"])
            rows.append(
                f"| {v} | {side} | {s['mean']:.2f} ± {s['std']:.2f} ({s['n']}) | "
                f"{seeds} | {s['s_per_epoch']:.1f} | {s['s_per_epoch_per_seed']:.1f} | "
                f"{s['cpu_per_epoch'] / per_seed(path):.1f} |"
            )
    return "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", help="the fetched koz4k/dni-pytorch folder")
    ap.add_argument("--peer-python", default="python", help="a Python with torch")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                    help="folder with Fashion-MNIST's IDX files")  # fmt: skip
    ap.add_argument("--peer-threads", type=int, default=0,
                    help="torch threads for the peer (0: torch's default)")  # fmt: skip
    ap.add_argument("--out", default="outputs/peers/dni")
    ap.add_argument("--only", choices=["peer", "product"])
    ap.add_argument("--variants", nargs="+", default=["dni", "cdni"],
                    choices=["dni", "cdni"])  # fmt: skip
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--product-overrides", nargs="*", default=[],
                    help="extra Hydra overrides for the product's runs")  # fmt: skip
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for v in args.variants:
        if args.only != "product":
            if not args.repo:
                ap.error(
                    "--repo (the fetched dni-pytorch folder) is needed for the peer"
                )
            path = os.path.join(args.out, f"peer_{v}.json")
            done = json.load(open(path)) if os.path.exists(path) else []
            for seed in args.seeds:
                if seed not in [r["seed"] for r in done]:
                    done.append(run_peer(args, v, seed))
                    json.dump(done, open(path, "w"), indent=1)
        if args.only != "peer":
            path = os.path.join(args.out, f"product_{v}.json")
            if not os.path.exists(path):
                json.dump(run_product(args, v), open(path, "w"), indent=1)
    text = table(args.out, args.variants)
    open(os.path.join(args.out, "table.md"), "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
