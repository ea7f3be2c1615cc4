"""Property checks for any adapter, built-in or your own, on the values it holds and on random
values: ``tnpeft.verify(graph | module | model | "saved/adapter/dir")``."""

from tnpeft.verification.checks import held_checks, random_checks, verify
from tnpeft.verification.report import Check, VerifyReport

__all__ = ["verify", "held_checks", "random_checks", "VerifyReport", "Check"]
