"""Research tools for a desktop or a cluster: parameter sweeps and walk-forward validation.

Optional: they need the ``research`` extra (Optuna, Dask distributed), which the appliance never
installs nor imports. ``space`` (the search space file) and ``trial`` (one backtest per parameter
set) import neither, so they also run in plain worker processes; ``sweep`` and ``walkforward``
drive Optuna and the executors (local processes or a Dask cluster).
"""
