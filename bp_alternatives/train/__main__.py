"""``python -m bp_alternatives.train``: the ``bpa-train`` command."""

from bp_alternatives.cli import train

if __name__ == "__main__":
    train()
