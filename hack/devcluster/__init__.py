"""A local Kubernetes dev cluster: real control plane binaries plus a process node agent."""
