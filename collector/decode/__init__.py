"""Pure decoders: WAL records (raw protobuf / text) -> Arrow tables of the public schema."""
