"""`meshlens demo`: a real local mesh (bookinfo behind Envoy sidecars with mTLS), meshlens
ingesting it, a canary rollout driven by the gate, and the live dashboards."""
