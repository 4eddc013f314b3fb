"""Traffic routers (Gateway API HTTPRoute, Istio, KServe, replica ratio) behind one small interface.

Filled in with the Rollout controller.
"""
