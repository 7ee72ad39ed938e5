"""Process exit codes, BSD sysexits where one fits: one definition for the CLI and every layer that
names one (systemd's ``RestartPreventExitStatus=`` and README's table list the same numbers)."""
from __future__ import annotations

EX_FAILED = 1  # a check, download, sweep or verification ran and failed
EX_USAGE = 2
EX_DATAERR = 65  # bad input data (recorded candles, imports)
EX_NOINPUT = 66  # an input file is missing or unreadable
EX_UNAVAILABLE = 69  # the exchange cannot be reached
EX_SOFTWARE = 70  # a bug
EX_CANTCREAT = 73  # an output file cannot be created
EX_STATE = 74  # sysexits EX_IOERR: the state database needs a person; systemd must not restart in a loop
EX_NOPERM = 77  # a directory or file pitrader must create or write cannot be; needs a person
EX_CONFIG = 78  # bad configuration or secrets
EX_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
