"""pitrader: a crypto trading appliance for the Raspberry Pi.

The packages follow one cycle of the engine, and each may import only from its own layer or
the layers before it (``tests/test_architecture.py`` enforces this and the absence of cycles):

1. leaves: ``models`` (domain dataclasses, order state table), ``clock``, ``log``,
   ``indicators`` (numba kernels), ``fields`` (config field helpers), ``timeframes`` (time units),
   ``events``, ``exitcodes`` (the process exit codes);
2. ``strategies`` (top-level package): plugins that score every pair;
3. ``config``, ``secrets``: config.json and the env file into frozen dataclasses;
4. ``store``: the only place with SQL (state, backtest store);
5. ``exchange``: the gateway protocol, ccxt and replay gateways, rate limits, downloads;
6. ``scan``: universe -> candles -> data quality -> indicators -> strategies -> ranking;
7. ``trading``: risk gate, exchange rules, executors (paper, live), exits, portfolio, stats;
8. ``tax``: the ledger, imports and reports;
9. ``engine``: the loop that drives scan -> risk -> execute -> exits, its observers' hooks, manual control;
10. ``service`` (systemd, health, the live dashboard), ``notify`` (outbox sender, Telegram) and ``backtest``;
11. ``research``: optional tools for a desktop or cluster (never imported by the appliance);
12. ``commands`` and ``cli``: one module per subcommand.
"""

__version__ = "0.1.0"
