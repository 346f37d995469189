"""Coefficient lists of the odd quintic iterations X <- aX + b(XXᵀ)X + c(XXᵀ)²X (ALGORITHMS.md 8.1, 8.4).

The Polar Express lists are used verbatim, as published; they are not regenerated here.
"""

from __future__ import annotations

Coefficients = tuple[float, float, float]

# Keller Jordan's quintic Newton–Schulz: maximal slope at zero, applied for every step.
NEWTON_SCHULZ_QUINTIC: Coefficients = (3.4445, -4.7750, 2.0315)

# Polar Express, 5 steps (l=1e-3, safety 2e-2, cushion 0.02); the safety factor is already applied.
POLAR_EXPRESS_5: tuple[Coefficients, ...] = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)

# Polar Express, 8 steps, before any safety factor; the last tuple is the classic cubic-convergent
# quintic (15/8, -10/8, 3/8) and is repeated for every further step.
POLAR_EXPRESS_8_UNSAFE: tuple[Coefficients, ...] = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
)


def safety_scaled(coefficients: tuple[Coefficients, ...], s: float) -> tuple[Coefficients, ...]:
    """Divide every tuple but the last by (s, s³, s⁵): the same as evaluating p(x/s)."""
    scaled = [(a / s, b / s**3, c / s**5) for a, b, c in coefficients[:-1]]
    return (*scaled, coefficients[-1])


# basic.py of the Polar Express package uses s = 1.01 for its polar iteration;
# EO's inverse square root (invsqrt.py) uses s = 1.05.
POLAR_EXPRESS_8 = safety_scaled(POLAR_EXPRESS_8_UNSAFE, 1.01)
POLAR_EXPRESS_8_INVSQRT = safety_scaled(POLAR_EXPRESS_8_UNSAFE, 1.05)
# Gram Newton–Schulz as EO runs it (rightpolargrad.py, hybrid.py): the same s = 1.05 list, which is
# also Dao-AILab's POLAR_EXPRESS_COEFFICIENTS (ALGORITHMS.md 8.5).
GRAM_NEWTON_SCHULZ = POLAR_EXPRESS_8_INVSQRT


def schedule(coefficients: tuple[Coefficients, ...], steps: int) -> tuple[Coefficients, ...]:
    """The first `steps` tuples of a list, repeating its last tuple when `steps` exceeds its length."""
    if steps < 1:
        raise ValueError(f"Invalid number of iteration steps: {steps} (need at least 1)")
    extra = max(0, steps - len(coefficients))
    return coefficients[:steps] + (coefficients[-1],) * extra
