"""What this machine's CPU can do natively, read without importing torch (system checks use it)."""

from __future__ import annotations

from functools import lru_cache

# CPU flags (as /proc/cpuinfo names them) that give oneDNN native bfloat16 matrix products.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The first processor's flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16_cpu() -> bool:
    """True when the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16).

    Without it, bf16 autocast on CPU still runs but emulated, slower than fp32: imgrec refuses it.
    Where ``/proc/cpuinfo`` is missing (not Linux), torch is asked.
    """
    flags = cpu_flags()
    if flags:
        return any(f in flags for f in BF16_FLAGS)
    try:
        import torch

        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (ImportError, AttributeError):
        return False
