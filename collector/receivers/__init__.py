"""The receive side: OTLP (gRPC and HTTP), Envoy's gRPC access-log service, gRPC health.

Every receiver does the same three things, in this order: validate the request cheaply (parse
the protobuf, count its items), append the raw bytes to the store (which returns once the record
is durable), then acknowledge. Decoding into rows happens later, off the request path.

    otlp.py        the three OTLP signals: parse, count, reject invalid items, responses (pure)
    ingest.py      the shared sink: in-flight memory budget, store append, self-metrics
    failures.py    collector errors -> gRPC status (+ retry trailers) / HTTP status (pure)
    grpc_server.py the grpc.aio server: OTLP services, Envoy ALS, health, auth, TLS, size limit
    envoy_als.py   envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs
    otlp_http.py   OTLP/HTTP routes (/v1/traces, /v1/metrics, /v1/logs) on meshlens.httpd
"""
