"""One module per `pitrader` subcommand: NAME, HELP, configure(parser), run(args, ctx) -> exit code."""
