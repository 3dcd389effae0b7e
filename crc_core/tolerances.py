"""Named tolerances and floors of the certificate, attack, dual and curvature-bound code (one place, one reason each).

Floors only keep a division or a logarithm finite; they never enter a bound's value where it matters (a floored
quantity is either provably non-zero or the row's result is discarded). Tolerances decide when an iterative
solver stops or when a result is called exact: they affect tightness and speed, never soundness.
"""

from __future__ import annotations

# --------------------------------------------------------------------------------------------------- division floors
TINY_F64 = 1e-300  # float64 divisor floor: avoids 0/0 while leaving every representable non-zero value unchanged
TINY_NORM = 1e-30  # norm floor for float32/float64 vectors (normalising a zero vector keeps it zero)
CURVATURE_FLOOR = 1e-12  # |m|, M, K floor where 1/|m| or 1/M is needed: a curvature below it is treated as ~0
PGD_NORM_FLOOR = 1e-12  # guards PGD's divisions by a zero gradient / perturbation norm

# --------------------------------------------------------------------------------------------------- rounding bounds
F32_UNIT_ROUNDOFF = 2.0**-24  # IEEE float32 round-to-nearest: fl(a ∘ b) = (a ∘ b)(1 + δ), |δ| ≤ this
F32_UNDERFLOW_ABS = 2.0**-126  # absolute error of one float32 operation near underflow (flush-to-zero included)
F64_SUM_RTOL = 1e-9  # relative slack for float64 norms/sums of ≤ 10^6 terms (γ_n = n·2^-53 ≈ 1.1e-10 at 10^6);
#   also every baseline's round-off allowance (CROWN's intercepts, the Lipschitz norms, App. G's dot products)

# --------------------------------------------------------------------------------------------------- η ranges
ETA_UNBOUNDED = 1e12  # top of the η range when m ≥ 0 (F_η convex for every η ≥ 0): large, yet finite in float64

# --------------------------------------------------------------------------------------------------- dual bound (*)
ETA_TOP_CLOSEST = 1e-12  # the largest η tried is (1 - this)/|m|: μ = 1 + ηm stays positive after rounding

# --------------------------------------------------------------------------------------------------- exactness
EXACT_MARGIN_RTOL = 1e-5  # |f| after the Newton step, relative to 1 + |f(x0)|: the point is on the boundary
EXACT_DIST_RTOL = 1e-4  # its distance exceeds the certified radius by at most this, relative: primal = dual

# --------------------------------------------------------------------------------------------------- Algorithm 1/2
MM_STATIONARY_TOL = 1e-5  # the paper's inner-loop stopping tolerance on ‖∇F_η‖ (Algorithms 1 and 2)
ATTACK_SOLVED_TOL = 1e-4  # Algorithm 2's inner problem counts as solved below this residual (with the one above)
ATTACK_SUCCESS_RTOL = 1e-3  # Algorithm 2's success: ‖x - x0‖ = ρ within this relative tolerance
ATTACK_ETA_TOP = 20.0  # Algorithm 2 searches η ∈ [-m, 20 (1 - m)] (App. C.3: a generous multiple of the curvature)

# --------------------------------------------------------------------------------------------------- fast solver
CHASE_STEPS = 12  # KKT fixed-point steps of the fast solver's phase A
GAP_RTOL = 2e-7  # a row's gap (boundary distance estimate - certified radius) is closed below this, relative:
#   with radii up to ~4 the result lies within the issue-9 allowance (1e-6 absolute) of any other solve's
BEYOND_STEPS = 2  # consecutive chase steps with η > 1/|m| that end the chase (the dual cannot close the gap)
WORSE_SLACK = 1e-12  # a bound below the previous one by more than this halves the chase's damping
DAMP_DOWN, DAMP_UP = 0.5, 1.5  # the chase's step factor β: × DAMP_DOWN after a worse bound, else × DAMP_UP (≤ 1)
DUAL_BUDGET = 400  # gradient evaluations the accelerated dual ascent (phase B) may spend per row
DUAL_LEVEL_ITERS = 60  # Nesterov iterations per η level
DUAL_MAX_LEVELS = 12  # η levels (regula falsi steps) per row
DUAL_STALL_ITERS = 10  # a level also ends after this many iterations in which ‖∇F_η‖ fell by less than
DUAL_STALL_FALL = 0.1  # this fraction below its smallest value so far: the row sits at its float32 rounding floor
DUAL_TOP_GAP = 1e-6  # the first level solves F_η at η = (1 - this) / |m|
DUAL_GAIN_RTOL = 1e-9  # a level (or the whole row) stops when the possible gain in (*) is below this, relative
BEST_FIRST_RTOL = 1e-6  # a row waits only when its bound exceeds its image's lowest by this, relative (the
#   bookkeeping's float32 rounding is far below it: a waiting row cannot end below the minimum after finalisation)
FALSE_POSITION_CLAMP = (0.02, 0.98)  # regula falsi's new η stays inside this part of its bracket (no stalling)
STATIONARY_EPS_MULT = 6  # ‖∇F_η‖ ≤ this × machine ε × (1 + ‖x - x0‖): minimised to working precision. At 6
#   certificates that are not exact end within ~1e-6 of the same solver in float64 (at 30: up to 7.8e-6 below;
#   bench/bench_solver_accuracy.py); far below it float32 rounding keeps rows iterating (see DUAL_STALL_*)

ROW_SPACE_MAX_FRACTION = 0.75  # the fast solver works in the first layer's row space when N1 < this × D (the
#   vectors shrink by N1 / D; closer to 1 the QR factorisation and the change of coordinates cost more than that)

# --------------------------------------------------------------------------------------------------- local bounds
LOCAL_MIN_RADIUS = 1e-6  # with no boundary point found, the ball search starts at 2·max(r_global, this)
LOCAL_BISECT_RTOL = 1e-6  # ball-radius bisection of the local certificate stops at this relative width
LOCAL_SPREAD_ROUND = 1e-12  # relative widening of pre-activation intervals (round-off in z0 ± R‖W_i‖)
LOCAL_D2_ABS, LOCAL_D2_REL = 1e-12, 1e-9  # widening of σ'' ranges: absolute, and relative to max |σ''|

# --------------------------------------------------------------------------------------------------- baselines
# App. G's ReLU quadratic bound (baselines/relu_quadratic.py)
RHO_TOL = 1e-3  # bisection stops when ρ_high − ρ_low ≤ this (13 steps from [0, 5])
DUAL_BISECTION_STEPS = 100  # 1-D dual: bisection on φ'(λ); 2⁻¹⁰⁰ of the bracket, far below any useful resolution
LAMBDA_CAP = 1e8  # upper end of the λ search where ∇²Q ⪰ 0 leaves it unbounded (φ(λ) ≥ ½ρ² long before, if at all)
DOMAIN_MARGIN = 1e-6  # λ ≤ (1 − this)/|λ_min(∇²Q)|: I + λ∇²Q has λ_min ≳ this, far above F64_SUM_RTOL, so its
#   positive definiteness can be proved; costs ≤ ~1e-6 relative of the dual value
MU_TRIES = (0.5, 1 / 64, 1 / 4096)  # fractions of the estimated μ = λ_min(I + λ∇²Q) tried in the Cholesky proof
TARGET_MARGIN = 1e-4  # aim the dual at (1 + this)·ρ when only ρ must be proved: room for the round-off
#   allowances, and a moderate λ
# CROWN (baselines/crown.py)
TANGENT_STEPS = 40  # bisection steps for the S-shaped tangent points: the bracket shrinks to 2^-40 of its width
NARROW = 1e-9  # below this interval width the chord's slope is replaced by σ'(l), with the Taylor term h·w²/2 added
