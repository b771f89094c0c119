"""The pgm family. READ ../FAMILY_GUIDE.md FIRST (contract, tests, tuning targets, git rules)."""
