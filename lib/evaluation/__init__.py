"""Evaluation: what the workflow, the benchmarks and the tests measure with, in one place.

- :mod:`lib.evaluation.metrics` — Dice (two empty masks agree), per organ, means, leave-one-group-out choice;
- :mod:`lib.evaluation.split` — the sample cohort's support / train / validation / test split;
- :mod:`lib.evaluation.oracle` — drafts from the support's points at their true locations (the GeoS stage's ceiling);
- :mod:`lib.evaluation.tables` — Markdown tables and the machine line every benchmark prints.
"""
