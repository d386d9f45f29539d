"""Envoy protos meshlens reads (ALS v3), as our own small .proto files.

Sources live here; `python -m meshlens.collector.proto.generate` (or `make proto`) writes the Python
modules into `collector/proto/gen/` (committed). See generate.py for why we do not depend on
xds-protos.
"""
