"""The canary judge: baseline-vs-canary verdicts (sequential, Kayenta- and Flagger-compatible)."""
