"""Empirical privacy and robustness audits: membership inference, one-run canary audits, and
poisoned-generator screening at pull time."""

from fedsynth.audit.report import AuditReport, run_audit, train_generators

__all__ = ["AuditReport", "run_audit", "train_generators"]
