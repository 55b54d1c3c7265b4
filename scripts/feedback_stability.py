"""Does a rule's training loss fall or blow up at a given SGD-momentum step size?

The check behind docs/results.md ("FA and DFA at bp's step size"): trains
one model for ``--steps`` minibatches of 32 Fashion-MNIST images with each rule from
the same initialisation and prints the mean training loss over each sixth of the run
and the final kernel norm per stage. Runs in-process (no per-epoch evaluation), so
it is fast enough for a CPU.

    python scripts/feedback_stability.py --model lenet --lr 0.01 \
        --rules bp,fa,usf,frsf,brsf,dfa
    python scripts/feedback_stability.py --model mlp --lr 0.05 --rules bp,fa,fa:0.1

A rule is ``bp``, ``dfa``, ``fa`` (random feedback) or a ``rule.feedback`` of FA
(``usf``, ``frsf``, ``brsf``, ``kp``); ``:<s>`` sets ``rule.scale``.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bp_alternatives.data import load_fashion_mnist
from bp_alternatives.model import cnn, init_params, lenet, mlp
from bp_alternatives.model.losses import get_loss
from bp_alternatives.rules import Batch, bp, dfa, fa

MODELS = {
    "lenet": lambda shape: lenet(shape, 10, init="xavier"),
    "small_cnn": lambda shape: cnn(shape, 10, channels=(8, 16), hidden=(64,)),
    "mlp": lambda s: mlp(s, 10, hidden=(256, 256), activation="relu", init="he"),
}


def make_rule(spec: str, model, loss):
    name, _, scale = spec.partition(":")
    kw = {"scale": float(scale)} if scale else {}
    if name == "bp":
        return bp(model, loss)
    if name == "dfa":
        return dfa(model, loss, **kw)
    return fa(model, loss, feedback="random" if name == "fa" else name, **kw)


def run(spec, model, loss, x, y, lr, steps, batch=32):
    """Mean training loss per sixth of the run and the final kernel norms."""
    rule, opt = make_rule(spec, model, loss), optax.sgd(lr, momentum=0.9)
    key = jax.random.PRNGKey(0)
    params = init_params(model, key)
    state, opt_state = rule.init(key, params), opt.init(params)

    @jax.jit
    def step(params, state, opt_state, xb, yb, k):
        d, state, metrics = rule.update(params, state, Batch(xb, yb), k)
        u, opt_state = opt.update(d, opt_state, params)
        return optax.apply_updates(params, u), state, opt_state, metrics["loss"]

    losses = []
    for i in range(steps):
        j = (i * batch) % (x.shape[0] - batch)
        params, state, opt_state, value = step(
            params,
            state,
            opt_state,
            x[j : j + batch],
            y[j : j + batch],
            jax.random.PRNGKey(i),
        )
        losses.append(float(value))
    sixths = np.array_split(np.array(losses), 6)
    norms = [float(jnp.linalg.norm(p["kernel"])) for p in params]
    return [float(s.mean()) for s in sixths], norms


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="lenet")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rules", default="bp,fa,usf,frsf,brsf,dfa")
    args = ap.parse_args()
    data = load_fashion_mnist(
        train_subset=args.steps * 32,
        test_subset=10,
        flatten=args.model == "mlp",
        resize=32 if args.model == "lenet" else None,
    )
    model = MODELS[args.model](data.input_shape)
    loss = get_loss("cross_entropy")
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    for spec in args.rules.split(","):
        sixths, norms = run(spec, model, loss, x, y, args.lr, args.steps)
        print(
            f"{spec:8s} sgd {args.lr} momentum 0.9: loss per sixth "
            + " ".join(f"{v:.3g}" for v in sixths)
            + " | kernel norms "
            + " ".join(f"{v:.3g}" for v in norms),
            flush=True,
        )


if __name__ == "__main__":
    main()
