"""Federated AIM (FLAIM): marginal-based DP synthesis across silos, framework-free.

``domain`` (discretisation) → ``workload`` (queries, candidates, weights) → ``accounting`` (zCDP
budget) → ``measure`` (int64 counts, Gaussian / Skellam noise) → ``model`` (Private-PGM on mbi
structures, fast numpy inference) → ``aim`` (central AIM) / ``methods`` (DistAIM, NaiveFLAIM,
AugFLAIM, flaim-sa as client/server steps) → ``runner`` (one run end to end) → ``metrics``.
Client vectors reach the server only through a :mod:`fedsynth.secagg.secure_sum` implementation.
See ``docs/flaim.md``.
"""
