"""The fair-comparison protocol, one command per set-up:

    python -m experiments.protocol experiment=protocol_digits
    bpa-protocol experiment=protocol_digits  # the same

Per rule: an Optuna search on the validation split, the best point chosen on
validation, then that point over several seeds on test; the table with confidence
intervals and Welch tests, and the figures, in ``<run dir>/report/``. Re-running the
same command resumes a killed search and retrains nothing that finished. This file is
intentionally kept short; the logic is ``bp_alternatives.protocol``, the command
``bp_alternatives.cli.protocol``.
"""

from bp_alternatives.cli import protocol

if __name__ == "__main__":
    protocol()
