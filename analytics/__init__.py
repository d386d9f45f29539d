"""meshlens analytics: DuckDB/polars over the store — graph, signals, health, judge, gate, SQL."""
