"""`meshlens` subcommands of the dashboards package (ui, grafana, demo)."""
