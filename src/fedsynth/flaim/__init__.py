"""Federated AIM (FLAIM): marginal-based DP synthesis across silos, framework-free.

``domain`` (discretisation) → ``workload`` (queries, candidates, weights) → ``measure`` (int64
counts, Skellam noise shares) → ``model`` (Private-PGM on mbi structures, fast numpy inference) →
``aim`` (central AIM) / ``methods`` (DistAIM, NaiveFLAIM, AugFLAIM, ours, as client/server steps) →
``driver`` (the one method loop) → ``data`` + ``runner`` (one run end to end) → ``metrics``.
Every ρ conversion and the budget ledger live in :mod:`fedsynth.privacy.zcdp`; client vectors
reach the server only through a :mod:`fedsynth.secagg.secure_sum` implementation.
See ``docs/flaim.md``.
"""
