"""DP generator families behind one interface (:mod:`.base`), artifacts (:mod:`.io`), pools
(:mod:`.pool`) and the one-table entry point (:mod:`.synthesizer`). Kept free of imports so that
reading :data:`DEFAULT_FAMILY` costs nothing."""

#: the family used when none is named (CLI ``--generator``, ``Synthesizer.create()``, a new
#: federation's ``--families``): pgm, the best on average at ε = 1 on the five SGDE benchmarks
#: (mean Synthetic test AUC 91.55 vs 90.99 for vae over 3 seeds; docs/benchmarks.md "Generator
#: families"). The one place this choice is made.
DEFAULT_FAMILY = "pgm"
