"""The only place that talks to the Kubernetes API (besides kopf's own watching).

Handlers call these small functions to act on what `logic/` decided: patch a status through the
status subresource, record an Event, server-side apply a child object, list children. They use
the official synchronous client; kopf runs synchronous handlers in its thread pool.
"""
