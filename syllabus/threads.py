"""CPU thread limits for torch and for the BLAS / OpenMP pools of NumPy, SciPy and scikit-learn.

On a small shared CPU, two BLAS threads waiting on each other can make a scikit-learn probe 30x
slower than one thread, so `--threads N` (and each `run all` job) limits every pool, not only
torch's: libraries loaded already through threadpoolctl, those loaded later through the
environment variables they read when they start.
"""

from __future__ import annotations

import os

POOL_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
_asked: int | None = None  # the process's `--threads`, when it was given


def limit_threads(n: int) -> None:
    """Use at most `n` threads in torch and in every BLAS / OpenMP pool of this process."""
    import torch
    from threadpoolctl import threadpool_limits

    global _asked
    _asked = n
    for name in POOL_VARIABLES:
        os.environ[name] = str(n)
    torch.set_num_threads(n)
    threadpool_limits(limits=n)


def small_blas():
    """A context for scikit-learn / SciPy calls on small arrays (probes, t-SNE, k-means): their
    BLAS pools use the `--threads` the process was given, else one thread. Beside torch's OpenMP
    threads, which spin a while after each parallel region, more BLAS threads on a small CPU
    wait on each other instead of working."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=_asked or 1)
