"""A chaos harness for the venue: a real hub and three real gates under seeded random faults.

``tests/chaos/run --schedules N --seed S`` runs N schedules; each starts a venue (hub on SQLite or
PostgreSQL, three `gate-agent run` processes, each gate's hub link through a :mod:`relay` the
harness cuts, delays and heals), drives a workload of scans at every gate and revocations at the
hub, injects the schedule's faults, heals everything, and checks the invariants of
:mod:`invariants` against the journals, the pulse logs and the hub's store.
"""
