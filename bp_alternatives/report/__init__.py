"""The comparison report: ``runs`` (find and load ``results.json`` files through
``bp_alternatives.results``), ``table`` (rows, columns, cells), ``render`` (Markdown,
LaTeX, CSV), ``stats`` (confidence intervals, Welch tests), ``plots`` (the
comparison's plots), ``figures`` and ``style`` (the protocol's figures and their
look), ``wandb_log`` (the aggregate W&B run). ``bp_alternatives.compare`` is its
command line."""
