"""Research scripts: what was tried, kept runnable (`python -m experiments.NAME` from the repository root).

Not part of the installed package; see experiments/README.md.
"""
