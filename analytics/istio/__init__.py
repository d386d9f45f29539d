"""Istio config against observed traffic: routing split, AuthorizationPolicy what-if, mTLS."""
