"""bitsandbytes' optional-kernel notice is dropped, and only it: the filter is on its logger before
bitsandbytes is first imported through tnpeft, and other records of that logger still pass."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from importlib.util import find_spec

from tnpeft.nn.kernel_notice import (
    KERNEL_LOGGER,
    KERNEL_NOTICE,
    TRUST_LOGGER,
    TRUST_NOTICE,
    DropKernelNotice,
    quiet_kernel_notice,
)


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(KERNEL_LOGGER, logging.WARNING, __file__, 1, msg, args, None)


def test_the_notice_is_dropped_and_other_records_pass() -> None:
    f = DropKernelNotice()
    assert not f.filter(_record(KERNEL_NOTICE + " from kernels-community: %s. Please ...", "no network"))
    assert f.filter(_record("Failed to load the CUDA library"))
    assert f.filter(_record("%s", "a notice that merely mentions " + KERNEL_NOTICE))
    assert not f.filter(_record(TRUST_NOTICE + " because Hugging Face Hub is in offline mode."))
    assert f.filter(_record("Skipping publisher trust check for 'someone/another-kernel' because ..."))


def test_the_filter_is_put_on_once() -> None:
    quiet_kernel_notice()
    quiet_kernel_notice()
    for name in (KERNEL_LOGGER, TRUST_LOGGER):
        assert sum(isinstance(f, DropKernelNotice) for f in logging.getLogger(name).filters) == 1


def test_the_filter_is_in_place_before_bitsandbytes_is_imported() -> None:
    """An import hook notes, when bitsandbytes starts to load, whether the filter is already on the
    logger; and a record in the notice's form logged after ``import tnpeft`` reaches no handler."""
    script = textwrap.dedent(
        f"""
        import importlib.abc, logging, sys
        seen = []
        class Watch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "bitsandbytes" and not seen:
                    lg = logging.getLogger({KERNEL_LOGGER!r})
                    seen.append(any(type(f).__name__ == "DropKernelNotice" for f in lg.filters))
                return None
        sys.meta_path.insert(0, Watch())
        import tnpeft
        logging.getLogger({KERNEL_LOGGER!r}).warning({KERNEL_NOTICE!r} + " from kernels-community: %s", "x")
        logging.getLogger({KERNEL_LOGGER!r}).warning("another notice")
        print("SEEN", seen)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    expected = "SEEN [True]" if find_spec("bitsandbytes") is not None else "SEEN []"
    assert expected in out.stdout, out.stdout
    assert KERNEL_NOTICE not in out.stderr
    assert "another notice" in out.stderr
