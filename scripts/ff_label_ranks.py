"""Where the true label ranks in each forward-forward stage's goodness, per test image.

    python -m experiments.train rule=ff hydra.run.dir=outputs/ff_digits
    python scripts/ff_label_ranks.py outputs/ff_digits

For the finished ``rule=ff`` run in the given directory (its checkpoint restored with
``bp_alternatives.restore``), prints per FF stage: the goodness of the true label and
of the wrong labels (mean, spread), the mean of the best wrong label, the share of
(true, wrong) pairs the stage orders correctly and the histogram of the true label's
rank among the C labels (0 = predicted). A stage can order most pairs correctly and
still predict below chance when one of the C - 1 wrong labels tops the true one.
"""

from __future__ import annotations

import sys

import jax.numpy as jnp
import numpy as np

from bp_alternatives.restore import restore


def main(run_dir: str) -> None:
    r = restore(run_dir)
    if r is None:
        sys.exit(f"{run_dir}: no finished run with a checkpoint to restore")
    x, y = jnp.asarray(r.data.x_test), np.asarray(r.data.y_test)
    pred = r.rule.predict(r.params, r.rule_state, x)
    modes = {**pred.headline, **pred.others}  # goodness_stage<l>: stage l's [B, C]
    rows = np.arange(len(y))
    for l in range(r.model.num_stages - 1):
        gl = np.asarray(modes[f"goodness_stage{l}"])
        true = gl[rows, y]
        wrong = np.delete(gl, y + rows * gl.shape[1]).reshape(len(y), -1)
        rank = (gl > true[:, None]).sum(1)
        print(
            f"stage {l}: true label G {true.mean():.3f} (std {true.std():.3f}); wrong "
            f"G {wrong.mean():.3f} (std within an image {wrong.std(1).mean():.3f}); "
            f"best wrong {wrong.max(1).mean():.3f}; pairs ordered "
            f"{(true[:, None] > wrong).mean():.3f}; predicted {np.mean(rank == 0):.4f}"
            f"; rank histogram {np.bincount(rank, minlength=gl.shape[1]).tolist()}"
        )


if __name__ == "__main__":
    main(sys.argv[1])
