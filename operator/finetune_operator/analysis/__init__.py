"""Metric providers for canary analysis (Prometheus) behind one small interface.

Filled in with the Rollout controller.
"""
