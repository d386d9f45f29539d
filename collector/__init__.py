"""meshlens collector: receivers, write-ahead log and the Parquet store (schema and layout)."""
