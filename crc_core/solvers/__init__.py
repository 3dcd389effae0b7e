"""Solvers behind the certificate: Algorithm 1 as written (``paper``), the fast solver (``fast``), and the
η-bisection + MM step shared by Algorithm 1 (certificates) and Algorithm 2 (attacks, crc_core.attack)."""

from .fast import solve_fast
from .mm import bisect_eta, mm_minimise, mm_step
from .paper import solve_paper

__all__ = ["bisect_eta", "mm_minimise", "mm_step", "solve_fast", "solve_paper"]
