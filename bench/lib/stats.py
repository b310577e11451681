"""Small statistics helpers (stdlib only)."""


def quantile(sorted_vals, q):
    """Linear-interpolated quantile of an ascending list (q in [0, 1]); None when empty."""
    n = len(sorted_vals)
    if n == 0:
        return None
    if n == 1:
        return float(sorted_vals[0])
    pos = q * (n - 1)
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(sorted_vals[lo]) * (1 - frac) + float(sorted_vals[hi]) * frac
