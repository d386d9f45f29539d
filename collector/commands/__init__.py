"""`meshlens` subcommands owned by the collector package (serve, import)."""
