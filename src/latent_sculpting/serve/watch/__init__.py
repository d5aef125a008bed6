"""``sculpt watch``: a live sensor that scores flows as they arrive.

:mod:`.sources` reads (captures, an interface, Zeek's conn.log, stdin) and :mod:`.decoders` turns
records into tables; :mod:`.loop` batches, scores and sets corrupt records aside, :mod:`.delivery`
sends scored flows out (alerts, incidents, drift verdicts), :mod:`.ecs` writes them with Elastic
Common Schema names, :mod:`.metrics` keeps the Prometheus metrics.
"""
