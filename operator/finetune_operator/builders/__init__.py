"""Pure renderers of child objects (Jobs, ConfigMaps, Services, ...) as plain dicts.

`k8s.apply` sends what these return; nothing here talks to the API server or imports kopf.
"""
