"""Federation rounds end to end: the hub's round API (exchange) + a Flower run (federated).

:mod:`.coordinator` is the only place the two meet: a silo joins (budget checked by the hub before
its data is read), the admin side starts the round, runs the family's fit on Flower — in-process
for simulation and tests, or on a SuperLink with one SuperNode per silo — and posts the artifact
back, where the hub stores it with every contributor's ledger charge in one transaction.
"""
