"""Empirical privacy and robustness audits: membership inference, one-run canary audits, and
poisoned-generator screening at pull time."""

from fedsynth.audit.poison import PoolScreen, PoolScreener, screen_pool
from fedsynth.audit.report import AuditReport, run_audit, train_generators

__all__ = ["AuditReport", "PoolScreen", "PoolScreener", "run_audit", "screen_pool", "train_generators"]
