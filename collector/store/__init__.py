"""The store: public SQL schema, on-disk layout, write-ahead log and Parquet writer."""
