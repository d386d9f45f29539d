"""`meshlens` subcommands of the analytics package (each: configure(parser), run(args) -> int)."""
