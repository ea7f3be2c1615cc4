"""Quiets one start-up notice of bitsandbytes that asks a tnpeft user for nothing they need.

bitsandbytes (imported with peft) tries, on a CPU with AVX512-BF16, to fetch an optional 4-bit
matmul kernel from a model hub and logs ``Failed to load CPU gemm_4bit_forward ...`` at warning
level when it cannot (no network, or the kernel not cached); its built-in CPU path then runs, with
the same results. The notice came at every ``import tnpeft`` and every ``tnpeft`` command. Only
that message is dropped; the logger's other records pass.
"""

from __future__ import annotations

import logging

KERNEL_LOGGER = "bitsandbytes.backends.cpu.ops"
KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward"

__all__ = ["KERNEL_LOGGER", "KERNEL_NOTICE", "DropKernelNotice", "quiet_kernel_notice"]


class DropKernelNotice(logging.Filter):
    """A logging filter that drops bitsandbytes' optional-kernel notice and passes every other record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(KERNEL_NOTICE)


def quiet_kernel_notice() -> None:
    """Put :class:`DropKernelNotice` on bitsandbytes' CPU-ops logger (once); call before peft is imported."""
    logger = logging.getLogger(KERNEL_LOGGER)
    if not any(isinstance(f, DropKernelNotice) for f in logger.filters):
        logger.addFilter(DropKernelNotice())
