"""The canary gate: a progressive-rollout state machine that asks the judge every interval and
moves traffic weights (Kubernetes VirtualService, GitOps YAML, live Envoy) or answers Flagger /
Argo Rollouts / Kayenta when they drive."""
