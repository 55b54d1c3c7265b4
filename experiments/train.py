"""Train one configuration: ``python -m experiments.train rule=fa data=digits seed=0``.

The same command as ``bpa-train`` and ``python -m bp_alternatives.train``
(:mod:`bp_alternatives.cli`); kept for scripts that call it by this name.
"""

from bp_alternatives.cli import train  # noqa: F401

if __name__ == "__main__":
    train()
