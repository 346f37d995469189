"""symopt service: REST API, SQL store, scheduler and sweep controller (built on symopt_core)."""
