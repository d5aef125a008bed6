"""``sculpt watch``: a live sensor that scores flows as they arrive.

:mod:`.sources` reads (captures, an interface, Zeek's conn.log, stdin), :mod:`.loop` batches,
scores and sets corrupt records aside, :mod:`.ecs` writes alerts with Elastic Common Schema
names, :mod:`.metrics` keeps the Prometheus metrics.
"""
