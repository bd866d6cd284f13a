"""pass@k from n samples of which c passed: the unbiased estimator of Chen et al. 2021 (Codex, eq. 1).

pass@k = E[1 - C(n - c, k) / C(n, k)]: the chance that k samples drawn without replacement from
the n contain at least one that passed. With k = n it is 1 when any sample passed; with k = 1 it
is c / n. Exact (integer binomials, then one division), so small cases check by hand.
"""

from __future__ import annotations

import math


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with `c` passing samples out of `n` (requires 1 <= k <= n, 0 <= c <= n)."""
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every draw of k holds a passing sample
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def ks_up_to(n: int) -> list[int]:
    """The k worth reporting for n samples: 1, 2, 4, ... and n itself."""
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks if ks[-1] == n else ks + [n]
