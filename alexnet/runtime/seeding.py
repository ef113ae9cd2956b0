"""Seeds derived from (seed, rank, step, stream): every random draw of a run is a function of where it happens,
so a resumed or restarted run draws exactly the numbers an uninterrupted one would have."""

SEED_MODULUS = 2**63


def derived_seed(seed: int, *, rank: int = 0, step: int = 0, stream: int = 0) -> int:
    """Distinct primes keep (rank, step, stream) triples from colliding for any realistic run length."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729 + stream) % SEED_MODULUS
