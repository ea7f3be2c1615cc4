"""Quiets one start-up notice of bitsandbytes that asks a tnpeft user for nothing they need.

bitsandbytes (imported with peft) tries, on a CPU with AVX512-BF16, to fetch an optional 4-bit
matmul kernel from a model hub and logs ``Failed to load CPU gemm_4bit_forward ...`` at warning
level when it cannot (no network, or the kernel not cached); its built-in CPU path then runs, with
the same results. The notice came at every ``import tnpeft`` and every ``tnpeft`` command. With
``HF_HUB_OFFLINE=1`` the ``kernels`` package first logs that it skips the publisher check of that
same kernel. Only these two messages are dropped; the loggers' other records pass.
"""

from __future__ import annotations

import logging

KERNEL_LOGGER = "bitsandbytes.backends.cpu.ops"
KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward"
TRUST_LOGGER = "kernels._internals.hf_hub"
TRUST_NOTICE = "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'"

__all__ = ["KERNEL_LOGGER", "KERNEL_NOTICE", "TRUST_LOGGER", "TRUST_NOTICE", "DropKernelNotice", "quiet_kernel_notice"]


class DropKernelNotice(logging.Filter):
    """A logging filter that drops the optional-kernel notices and passes every other record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith((KERNEL_NOTICE, TRUST_NOTICE))


def quiet_kernel_notice() -> None:
    """Put :class:`DropKernelNotice` on the two loggers (once each); call before peft is imported."""
    for name in (KERNEL_LOGGER, TRUST_LOGGER):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropKernelNotice) for f in logger.filters):
            logger.addFilter(DropKernelNotice())
