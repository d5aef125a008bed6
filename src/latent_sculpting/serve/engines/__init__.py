"""Scoring engines: where the one scorer (:mod:`latent_sculpting.serve.scoring`) runs.

:mod:`.local` streams files through it in one process into one output file; :mod:`.ray`
scores many files in parallel on a Ray cluster, one output shard per input file, through the
same local path in each worker. The HTTP service (:mod:`latent_sculpting.serve.service`) is the
third user of the scorer.
"""
