"""Actuators: the routing controllers the gate drives (kubernetes, file, envoy, none)."""
