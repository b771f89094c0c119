"""Secure summation of integer client vectors: the only way client data reaches a server.

* :mod:`fedsynth.secagg.secure_sum` — the ``SecureSum`` contract (``SumResult``, ``plain_sum``,
  ``SecureSumAborted``) and ``SecAggPlusSum``, an in-process execution of SecAgg+;
* :mod:`fedsynth.secagg.exact_sum` — exact integer sums through Flower's SecAgg+ workflow (limb
  encoding of bounded integers into its float/modular pipeline).

Used by the FLAIM core (:mod:`fedsynth.flaim`) and by the Flower apps (:mod:`fedsynth.federated`);
it imports neither.
"""
