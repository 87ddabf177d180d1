"""Compiled E-step kernels: a chunk's tiles, each in one sweep (numba).

:func:`daskgmm.engine.estep.estep_statistics` hands a group of candidates (one covariance
type, one number of components ``K``, one centre) to the kernel of its type here when
numba is installed and the chunk is a NumPy array worth compiling for
(:func:`daskgmm.engine.estep.use_fused`); otherwise the NumPy tile loop of
:mod:`daskgmm.engine.estep` computes the same statistics with the same formulas (the
tests hold the two paths to each other).

What the compiled loop changes is not the arithmetic but its cost. For every tile it

- centres and transposes the rows into the affine tile in one pass, four rows by four
  features at a time in registers (:func:`_centre_block`: float64 difference, one
  rounding to the compute dtype, a non-finite check on the stored vectors),
- calls the NumPy path's GEMMs for the projections, log-densities and first moments,
  from the compiled loop (BLAS through SciPy's ``cython_blas``, one thread), with the
  products of one candidate at a time,
- sums the symmetric second moments itself, one triangle in 4 × 4 blocks with the
  responsibilities multiplied in as the rows are read (:func:`scatter_lower`), where the
  NumPy path scales the tile (or a copy of it) and calls BLAS,
- fuses everything element-wise between the products (squared norms, the log-sum-exp,
  the entropy, the sample weights) into a few loops over the tile while it is in the
  cache, with an exponential that vectorises (:func:`_exp_le0`), in vectors as wide as
  the CPU's (:func:`_full_width`), and
- adds the tile's statistics into float64 accumulators,

all without the GIL (two chunks run in parallel in one process) and without a Python
call per tile, so tiles can be as small as the cache wants (a few hundred rows) rather
than as large as the interpreter's overhead demands.

The kernels report a problem through ``status`` (a code and the tile's first row) and
leave the message to :mod:`daskgmm.engine.estep`, which raises the same errors as its
NumPy path: :data:`NONFINITE_TILE`, :data:`LOG_LIKELIHOOD_OVERFLOW`,
:data:`PRODUCTS_OVERFLOW`.

Compilation: every kernel is compiled on its first call for the dtypes it gets (the
data's, float32 or float64, and the compute dtype), about a second each, and cached on
disk by numba (``cache=True``: in ``__pycache__`` beside this file, or numba's user-wide
cache directory where that is read-only, or ``NUMBA_CACHE_DIR``), so a later process
(a user's next fit, every Dask worker) loads the machine code instead of compiling it.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from daskgmm.engine.estep import LOG_CUT

#: ``status[0]`` codes.
OK = 0
#: A tile holds a NaN or an infinity (of the data, or after centring in the compute dtype).
NONFINITE_TILE = 1
#: A row's log-likelihood is not finite (NaN or +inf weighted log-densities).
LOG_LIKELIHOOD_OVERFLOW = 2
#: A tile's second moments overflowed the compute dtype.
PRODUCTS_OVERFLOW = 3

_JIT = dict(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})

# --------------------------------------------------------------------------------------
# vectors as wide as the CPU's
# --------------------------------------------------------------------------------------
# LLVM tunes for recent Intel server CPUs (Ice Lake, Sapphire and Emerald Rapids) with
# "prefer-256-bit": its vectoriser then uses 256-bit vectors even where the CPU has 512-bit
# ones (a precaution for older CPUs, which slowed their clock for 512-bit arithmetic;
# OpenBLAS's kernels, which the same E-step calls, use 512-bit registers there anyway).
# A kernel that calls _full_width() lifts that preference for its own loops: the
# softmax of 32 components over 100,000 float64 rows took 7.7 ms instead of 10.5
# (Emerald Rapids, one thread), with the same results. Where the CPU has no 512-bit
# vectors, the attribute changes nothing.
_PREFER_FULL_WIDTH = '"prefer-vector-width"="512"'


def _string_attributes_render() -> bool:
    """Whether this llvmlite writes a string function attribute added to a function's
    attribute set into the IR as given (its ``FunctionAttributes`` accepts only names
    without values through ``add``; the set underneath takes any string)."""
    try:
        attributes = ir.FunctionAttributes()
        set.add(attributes, _PREFER_FULL_WIDTH)
        return _PREFER_FULL_WIDTH in attributes._to_list(ir.VoidType())
    except Exception:  # a future llvmlite: the kernels keep LLVM's default width
        return False


_FULL_WIDTH = _string_attributes_render()


@intrinsic
def _full_width(typingctx):
    """Let LLVM vectorise the calling function's loops with 512-bit vectors where the
    CPU has them (a function attribute; no code)."""

    def codegen(context, builder, signature, args):
        if _FULL_WIDTH:
            set.add(builder.function.attributes, _PREFER_FULL_WIDTH)
        return context.get_dummy_value()

    return types.none(), codegen


# --------------------------------------------------------------------------------------
# exp(x) for x in [log(tiny) + 1, 0], vectorisable
# --------------------------------------------------------------------------------------
# exp(x) = 2**n exp(r) with n = round(x / log 2) and r = x - n log 2 (log 2 split in a
# high part with trailing zeros and a low part, so that n log 2 is exact), |r| <= log(2)/2;
# exp(r) by a polynomial (its interpolant at the Chebyshev nodes of [-log(2)/2, log(2)/2],
# computed in 40-digit arithmetic and rounded: degree 11 for float64, within 0.73 units in
# the last place on that interval, as close as the degree-13 Taylor polynomial used
# before; degree 6 for float32, within 0.83), and 2**n built from its exponent bits. On
# [log(tiny) + 1, 0], 2**n is a normal number and no special case is needed; the
# softmax's arguments lie in [LOG_CUT, 0] (LOG_CUT = log(tiny) / 2), inside it.
# n is rounded by adding a shifter, 1.5 * 2**52 plus the exponent's bias (2**23 and the
# bias in float32): the sum's last bits are then n + bias, which shifted left by 52 (23)
# are the bits of 2**n, and the sum minus the shifter is n as a float; three operations
# where floor, two conversions, an addition and a shift took six (a softmax of 32 float64
# components 4.22 -> 3.80 ms per 100,000 rows, of 8 float32 ones 1.14 -> 0.92 ms). The
# kernels' fastmath flags allow contraction only, so the compiler keeps the sum's
# rounding.
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
(_U0, _U1, _U2, _U3, _U4, _U5, _U6, _U7, _U8, _U9, _U10, _U11) = (
    1.0, 1.0, 0.5000000000000019, 0.1666666666666668, 0.0416666666664881,
    0.008333333333319601, 0.0013888888952314775, 0.00019841269890047113,
    2.4801485482328494e-05, 2.755724091857897e-06, 2.763263963904103e-07,
    2.5110037605963777e-08)
_LOG2E_32 = np.float32(_LOG2E)
_SHIFTER = 6755399441055744.0 + 1023.0  # 1.5 * 2**52 + the exponent's bias
_SHIFTER_32 = np.float32(12582912.0 + 127.0)  # 1.5 * 2**23 + the bias
_LN2_HI_32 = np.float32(6.9314575195e-01)
_LN2_LO_32 = np.float32(1.4286067653e-06)
(_T0, _T1, _T2, _T3, _T4, _T5, _T6) = (np.float32(c) for c in (
    1.0, 1.0, 0.5, 0.16666415333747864, 0.04166635125875473, 0.00837512593716383,
    0.0013941108481958508))


def _bitcast(name: str, kinds: dict, doc: str):
    """An intrinsic ``name`` that reinterprets its argument's bits: ``kinds`` maps each
    accepted numba type to the result's numba and LLVM types (a register move: no memory
    round trip, so a loop around it vectorises)."""

    def typer(typingctx, value):
        if value not in kinds:
            return None
        result, llvm_type = kinds[value]

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], llvm_type)

        return result(value), codegen

    typer.__name__ = typer.__qualname__ = name
    typer.__doc__ = doc
    return intrinsic(typer)


_float_from_bits = _bitcast(
    "_float_from_bits", {types.int64: (types.float64, ir.DoubleType()),
                         types.int32: (types.float32, ir.FloatType())},
    "The float whose IEEE 754 bits are the argument: int64 to float64, int32 to float32.")
_bits_of_float = _bitcast(
    "_bits_of_float", {types.float64: (types.int64, ir.IntType(64)),
                       types.float32: (types.int32, ir.IntType(32))},
    "The IEEE 754 bits of a float64 as an int64, of a float32 as an int32.")


def _exp_le0(x):
    """``exp(x)`` for ``x`` in ``[log(tiny) + 1, 0]``, float32 or float64 (inlined into
    the loop that calls it, which vectorises)."""
    return math.exp(x)  # pragma: no cover - replaced by the overload in numba


@overload(_exp_le0, inline="always", jit_options=dict(_JIT))
def _exp_le0_impl(x):
    if x == types.float32:
        def exp32(x):
            kd = x * _LOG2E_32 + _SHIFTER_32
            nf = kd - _SHIFTER_32
            r = (x - nf * _LN2_HI_32) - nf * _LN2_LO_32
            p = _T6
            p = p * r + _T5
            p = p * r + _T4
            p = p * r + _T3
            p = p * r + _T2
            p = p * r + _T1
            p = p * r + _T0
            return p * _float_from_bits(np.int32(_bits_of_float(kd) << 23))
        return exp32

    def exp64(x):
        kd = x * _LOG2E + _SHIFTER
        nf = kd - _SHIFTER
        r = (x - nf * _LN2_HI) - nf * _LN2_LO
        p = _U11
        p = p * r + _U10
        p = p * r + _U9
        p = p * r + _U8
        p = p * r + _U7
        p = p * r + _U6
        p = p * r + _U5
        p = p * r + _U4
        p = p * r + _U3
        p = p * r + _U2
        p = p * r + _U1
        p = p * r + _U0
        return p * _float_from_bits(_bits_of_float(kd) << 52)
    return exp64


@njit(**_JIT)
def exp_nonpositive(values: np.ndarray) -> None:
    """``values[:] = exp(values)`` by the compiled exponential (1-D; for the tests)."""
    _full_width()
    for i in range(values.size):
        values[i] = _exp_le0(values[i])


# --------------------------------------------------------------------------------------
# log(x) for positive normal x, vectorisable (the softmax's row totals, in [1, K])
# --------------------------------------------------------------------------------------
# x = 2**e f with f in [sqrt(2)/2, sqrt(2)) (the exponent field read from the bits, f
# halved where it exceeds sqrt(2)); log f = 2 atanh(s) with s = (f - 1) / (f + 1),
# |s| <= 0.1716, by its series 2 s (1 + z/3 + z**2/5 + ...) in z = s**2 to z**11 (the
# next term is below 1e-18 of the value); log x = e log 2 + log f, log 2 in two parts.
# math.log is a call per row that does not vectorise: 6 ns a row, a third of a float32
# softmax of 8 components.
_ATANH = tuple(1.0 / (2 * j + 1) for j in range(12))
(_A0, _A1, _A2, _A3, _A4, _A5, _A6, _A7, _A8, _A9, _A10, _A11) = _ATANH
_SQRT2 = math.sqrt(2.0)
_MANTISSA = (1 << 52) - 1
_ONE_BITS = 1023 << 52


@njit(**_JIT)
def log_positive(values: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = log(values[i])`` in float64 for positive normal ``values`` (1-D;
    float32 values are widened first)."""
    _full_width()
    for i in range(values.size):
        bits = _bits_of_float(np.float64(values[i]))
        e = (bits >> 52) - 1023
        f = _float_from_bits((bits & _MANTISSA) | _ONE_BITS)
        big = f > _SQRT2
        f = f * 0.5 if big else f
        ef = np.float64(e + 1 if big else e)
        s = (f - 1.0) / (f + 1.0)
        z = s * s
        p = _A11
        p = p * z + _A10
        p = p * z + _A9
        p = p * z + _A8
        p = p * z + _A7
        p = p * z + _A6
        p = p * z + _A5
        p = p * z + _A4
        p = p * z + _A3
        p = p * z + _A2
        p = p * z + _A1
        p = p * z + _A0
        out[i] = ef * _LN2_HI + (ef * _LN2_LO + 2.0 * s * p)


# --------------------------------------------------------------------------------------
# weighted scatter, one triangle
# --------------------------------------------------------------------------------------
# The second moments sum_i r_i y_i y_iᵀ of a tile (D × m, rows contiguous) are symmetric,
# their inner dimension is long (the tile's rows) and their result small (D × D): BLAS's
# products of that shape ran at 25-35 GFLOP/s on one AVX-512 core, and the weights had to
# be applied first (the square roots of the responsibilities, or a scaled copy). Here the
# lower triangle is computed in 4 x 4 blocks, sixteen sums kept in vector registers
# through the tile, with the weight multiplied into one side as the rows are read. Against
# the square roots, scaling and BLAS (syrk from 48 features, a general product below),
# whole 100,000-row chunks of one thread: full D=16 K=8 24.5 -> 19.6 ms, D=48 K=8 168 ->
# 124 ms, D=64 K=16 773 -> 555 ms, D=128 K=4 577 -> 466 ms; float32 D=64 K=16 287 -> 239
# ms; the tied scatter (D=32) 22.2 -> 20.5 ms per chunk.
_SUMS_ANY_ORDER = dict(_JIT, fastmath={"contract", "reassoc"})


@njit(**_SUMS_ANY_ORDER)
def scatter_lower(Y: np.ndarray, r: np.ndarray, out: np.ndarray) -> None:
    """``out[d, e] = sum_i r_i Y[d, i] Y[e, i]`` for ``e <= d`` in the compute dtype
    (``Y`` D × m, ``r`` m, ``out`` D × D; the entries above the diagonal within the
    diagonal 4 × 4 blocks are written too, the others are left alone). The sums are
    vectorised along the rows and may be added in any order, as BLAS's are."""
    _full_width()
    D, m = Y.shape
    D4 = D - D % 4
    zero = Y.dtype.type(0)  # of the compute dtype (a literal 0.0 is float64)
    for d0 in range(0, D4, 4):
        for e0 in range(0, d0 + 1, 4):
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
            s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
            for i in range(m):
                ri = r[i]
                a0, a1 = ri * Y[d0, i], ri * Y[d0 + 1, i]
                a2, a3 = ri * Y[d0 + 2, i], ri * Y[d0 + 3, i]
                b0, b1, b2, b3 = Y[e0, i], Y[e0 + 1, i], Y[e0 + 2, i], Y[e0 + 3, i]
                s00 += a0 * b0
                s01 += a0 * b1
                s02 += a0 * b2
                s03 += a0 * b3
                s10 += a1 * b0
                s11 += a1 * b1
                s12 += a1 * b2
                s13 += a1 * b3
                s20 += a2 * b0
                s21 += a2 * b1
                s22 += a2 * b2
                s23 += a2 * b3
                s30 += a3 * b0
                s31 += a3 * b1
                s32 += a3 * b2
                s33 += a3 * b3
            out[d0, e0], out[d0, e0 + 1], out[d0, e0 + 2], out[d0, e0 + 3] = s00, s01, s02, s03
            out[d0 + 1, e0], out[d0 + 1, e0 + 1] = s10, s11
            out[d0 + 1, e0 + 2], out[d0 + 1, e0 + 3] = s12, s13
            out[d0 + 2, e0], out[d0 + 2, e0 + 1] = s20, s21
            out[d0 + 2, e0 + 2], out[d0 + 2, e0 + 3] = s22, s23
            out[d0 + 3, e0], out[d0 + 3, e0 + 1] = s30, s31
            out[d0 + 3, e0 + 2], out[d0 + 3, e0 + 3] = s32, s33
    for d in range(D4, D):  # the last rows (of fewer than four): one sum at a time
        for e in range(d + 1):
            s = zero
            for i in range(m):
                s += r[i] * Y[d, i] * Y[e, i]
            out[d, e] = s


# --------------------------------------------------------------------------------------
# pieces shared by the kernels
# --------------------------------------------------------------------------------------
@intrinsic
def _centre_block(typingctx, X, row, col, centre, out, out_col):
    """Four rows of ``X`` from ``row``, features ``col .. col + 3``, minus the centre,
    into ``out[col .. col + 3, out_col .. out_col + 3]`` transposed: four vector loads,
    one subtraction each, an in-register 4 x 4 transpose (eight shuffles), a rounding to
    ``out``'s dtype and four vector stores. Returns nonzero if a stored value is not
    finite. (The same loop in numba stores one number at a time: 3 of 4 ms of centring
    100,000 x 32 float64 rows.)"""
    floats = (types.float32, types.float64)
    arrays = (X, centre, out)
    # Vector loads and stores of four neighbours along the last axis: C order only.
    if not (all(isinstance(a, types.Array) and a.layout == "C" for a in arrays)
            and X.dtype in floats and out.dtype in floats
            and centre.dtype == types.float64):
        return None

    def codegen(context, builder, signature, args):
        x_type, row_type, col_type, c_type, out_type, out_col_type = signature.args
        x_array = context.make_array(x_type)(context, builder, args[0])
        c_array = context.make_array(c_type)(context, builder, args[3])
        out_array = context.make_array(out_type)(context, builder, args[4])
        intp = context.get_value_type(types.intp)
        row = context.cast(builder, args[1], row_type, types.intp)
        col = context.cast(builder, args[2], col_type, types.intp)
        out_col = context.cast(builder, args[5], out_col_type, types.intp)

        def vector_at(array_type, array, index):
            """Four elements from ``array[index]`` as a vector pointer."""
            pointer = cgutils.get_item_pointer(context, builder, array_type, array, index)
            element = context.get_value_type(array_type.dtype)
            return builder.bitcast(pointer, ir.VectorType(element, 4).as_pointer())

        def offset(index, j):
            return builder.add(index, ir.Constant(intp, j))

        double4 = ir.VectorType(ir.DoubleType(), 4)
        centre4 = builder.load(vector_at(c_type, c_array, [col]), align=8)
        rows = []
        for j in range(4):
            v = builder.load(vector_at(x_type, x_array, [offset(row, j), col]),
                             align=x_type.dtype.bitwidth // 8)
            if x_type.dtype != types.float64:
                v = builder.fpext(v, double4)
            rows.append(builder.fsub(v, centre4))

        def shuffle(a, b, lanes):
            return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), 4),
                                                            lanes))
        # (a0 b0 a2 b2), (a1 b1 a3 b3) of rows a, b; then column j from two of those.
        lo01, hi01 = (shuffle(rows[0], rows[1], [0, 4, 2, 6]),
                      shuffle(rows[0], rows[1], [1, 5, 3, 7]))
        lo23, hi23 = (shuffle(rows[2], rows[3], [0, 4, 2, 6]),
                      shuffle(rows[2], rows[3], [1, 5, 3, 7]))
        columns = (shuffle(lo01, lo23, [0, 1, 4, 5]), shuffle(hi01, hi23, [0, 1, 4, 5]),
                   shuffle(lo01, lo23, [2, 3, 6, 7]), shuffle(hi01, hi23, [2, 3, 6, 7]))
        out4 = ir.VectorType(context.get_value_type(out_type.dtype), 4)
        bad = None
        for j, column in enumerate(columns):
            if out_type.dtype != types.float64:
                column = builder.fptrunc(column, out4)
            builder.store(column, vector_at(out_type, out_array, [offset(col, j), out_col]),
                          align=out_type.dtype.bitwidth // 8)
            # v - v is 0 for a finite v and NaN for NaN and the infinities.
            nonfinite = builder.fcmp_unordered("!=", builder.fsub(column, column),
                                               ir.Constant(out4, None))
            bad = nonfinite if bad is None else builder.or_(bad, nonfinite)
        return builder.zext(builder.bitcast(bad, ir.IntType(4)), ir.IntType(64))

    return types.int64(X, row, col, centre, out, out_col), codegen


@njit(**_JIT)
def _centre(X, r0, m, centre, out, squares):
    """Rows ``r0 .. r0 + m`` of ``X`` minus ``centre`` into ``out[:D]`` (features × rows,
    compute dtype) and ones into ``out[D]``; ``squares`` 0: nothing more, 1: the squared
    centred values into ``out[D + 1:]`` (``'diag'``), 2: their sums into ``out[D + 1]``
    (``'spherical'``). Returns the number of non-finite centred values, or of 4 x 4
    blocks holding one."""
    _full_width()
    D = X.shape[1]
    D4, m4 = D - D % 4, m - m % 4
    bad = 0
    for i in range(0, m4, 4):
        for d in range(0, D4, 4):
            bad += _centre_block(X, r0 + i, d, centre, out, i) != 0
    for d in range(D4, D):  # the last features (of fewer than four)
        for i in range(m4):
            out[d, i] = X[r0 + i, d] - centre[d]
    for i in range(m4, m):  # the last rows (of fewer than four)
        for d in range(D):
            out[d, i] = X[r0 + i, d] - centre[d]
    for d in range(D):
        for i in range(0 if d >= D4 else m4, m):
            v = out[d, i]
            bad += (v - v) != 0
    for i in range(m):
        out[D, i] = 1
    if squares == 1:
        for d in range(D):
            for i in range(m):
                out[D + 1 + d, i] = out[d, i] * out[d, i]
    elif squares == 2:
        for i in range(m):
            out[D + 1, i] = 0
        for d in range(D):
            for i in range(m):
                out[D + 1, i] += out[d, i] * out[d, i]
    return bad


@njit(**_JIT)
def _add_lower(S, acc):
    """Add the lower triangle of a tile's second moments ``S`` (compute dtype) into the
    float64 accumulator ``acc``; returns the number of non-finite entries added."""
    D = S.shape[0]
    overflow = 0
    for d in range(D):
        for e in range(d + 1):
            v = S[d, e]
            overflow += (v - v) != 0
            acc[d, e] += v
    return overflow


@njit(**_JIT)
def _mirror_lower(S):
    """Copy the lower triangle of the square ``S`` onto its upper one."""
    for d in range(S.shape[0]):
        for e in range(d):
            S[e, d] = S[d, e]


@njit(**_JIT)
def _squared_norms(Y, out):
    """``out[i] = sum_d Y[d, i]²`` (``Y`` D × m): four features a sweep over ``out``, so
    that it is read and written a quarter as often (one feature a sweep, the norms of
    full D=16 K=8 took 2.6 of a 100,000-row chunk's 20 ms)."""
    _full_width()
    D, m = Y.shape
    D4 = D - D % 4
    zero = out.dtype.type(0)  # of the compute dtype
    for i in range(m):
        out[i] = zero
    for d in range(0, D4, 4):
        for i in range(m):
            y0, y1, y2, y3 = Y[d, i], Y[d + 1, i], Y[d + 2, i], Y[d + 3, i]
            out[i] += (y0 * y0 + y1 * y1) + (y2 * y2 + y3 * y3)
    for d in range(D4, D):
        for i in range(m):
            out[i] += Y[d, i] * Y[d, i]


@njit(**_JIT)
def _softmax(a, w, r0, cut, entropy, top, total, shifted, logs):
    """Normalise one candidate's weighted log-densities ``a`` (K × m) into
    responsibilities times the sample weights (``w`` empty: weights of one), in place
    (``logs``: float64 scratch of at least ``m``).

    Returns ``(sum_i w_i log p(x_i), sum_i w_i sum_k r_ik log r_ik, bad rows)``; the
    operations are the NumPy path's (:func:`daskgmm.engine.estep._softmax`): shift by the
    row's maximum, exponentiate, responsibilities whose shifted log is below ``cut``
    zero, normalise. Three sweeps over the tile: the maxima; the shift, exponential,
    cut and row totals; the normalisation."""
    _full_width()
    K, m = a.shape
    bad = 0
    for i in range(m):
        top[i] = a[0, i]
    for k in range(1, K):
        for i in range(m):
            x = a[k, i]
            bad += x != x
            top[i] = x if x > top[i] else top[i]
    zero, one = cut - cut, cut / cut  # of the compute dtype (a literal 0 is int64)
    for i in range(m):
        t = top[i]
        bad += (t - t) != 0  # NaN or an infinite maximum: no finite log-likelihood
        top[i] = t if (t - t) == 0 else zero
        total[i] = zero
    for k in range(K):
        for i in range(m):
            v = a[k, i] - top[i]
            v = v if v <= zero else zero
            keep = v >= cut
            v = v if keep else cut
            if entropy:
                shifted[k, i] = v
            e = _exp_le0(v)
            e = e if keep else zero
            a[k, i] = e
            total[i] += e
    logs = logs[:m]
    log_positive(total, logs)
    has_w = w.size > 0
    ll = 0.0
    ent = 0.0
    for i in range(m):
        weight = w[r0 + i] if has_w else 1.0
        ll += weight * (logs[i] + top[i])
    if entropy:
        for i in range(m):
            cross = 0.0
            for k in range(K):
                cross += a[k, i] * shifted[k, i]
            ent += (w[r0 + i] if has_w else 1.0) * (cross / total[i] - logs[i])
    if has_w:
        for i in range(m):
            total[i] = w[r0 + i] / total[i]
    else:
        for i in range(m):
            total[i] = one / total[i]
    for k in range(K):
        for i in range(m):
            a[k, i] *= total[i]
    if not math.isfinite(ll):
        bad += 1
    return ll, ent, bad


@njit(**_JIT)
def _first_moments(a, xt, mom, nk, sx, base):
    """``nk`` and ``sx`` of the tile (``a`` the weighted responsibilities, K × m) added to
    components ``base ..`` of the accumulators."""
    _full_width()
    K = a.shape[0]
    D = xt.shape[0] - 1
    np.dot(a, xt.T, mom)
    for k in range(K):
        nk[base + k] += mom[k, D]
        for d in range(D):
            sx[base + k, d] += mom[k, d]


# --------------------------------------------------------------------------------------
# the kernels, one per covariance type
# --------------------------------------------------------------------------------------
@njit(**_JIT)
def full_chunk(X, w, centre, LT, const, tile_rows, scalars, entropy, buf_xt, buf_y, buf_a,
               buf_rows, buf_log, buf_s, buf_mom, nk, sx, s2, ll, ent, status):
    """``'full'``: ``LT`` (C, K·D, D + 1) the extended factors of the group's C
    candidates, ``const`` (C, K) their log-constants; ``s2`` (C·K, D, D) accumulates
    ``M_k = sum_i w_i r_ik y_ik y_ikᵀ`` (see :mod:`daskgmm.engine.covariance.full`), one
    triangle a tile, mirrored after the last."""
    _full_width()
    n, D = X.shape
    C, KD = LT.shape[0], LT.shape[1]
    K = KD // D
    cut, half = scalars[0], scalars[1]
    for r0 in range(0, n, tile_rows):
        m = min(tile_rows, n - r0)
        xt = buf_xt[:(D + 1) * m].reshape((D + 1, m))
        if _centre(X, r0, m, centre, xt, 0):
            status[0], status[1] = NONFINITE_TILE, r0
            return
        Y = buf_y[:KD * m].reshape((KD, m))
        Y3 = Y.reshape((K, D, m))
        a = buf_a[:K * m].reshape((K, m))
        top, total = buf_rows[0, :m], buf_rows[1, :m]
        shifted = buf_a[K * m:2 * K * m].reshape((K, m))
        mom = buf_mom[:K * (D + 1)].reshape((K, D + 1))
        for c in range(C):
            np.dot(LT[c], xt, Y)
            for k in range(K):
                _squared_norms(Y3[k], a[k])
                ck = const[c, k]
                for i in range(m):
                    a[k, i] = ck - half * a[k, i]
            t_ll, t_ent, bad = _softmax(a, w, r0, cut, entropy, top, total,
                                        shifted, buf_log)
            if bad:
                status[0], status[1] = LOG_LIKELIHOOD_OVERFLOW, r0
                return
            ll[c] += t_ll
            ent[c] += t_ent
            _first_moments(a, xt, mom, nk, sx, c * K)
            for k in range(K):  # the lower triangle; mirrored after the last tile
                scatter_lower(Y3[k], a[k], buf_s)
                if _add_lower(buf_s, s2[c * K + k]):
                    status[0], status[1] = PRODUCTS_OVERFLOW, r0
                    return
    for ck in range(s2.shape[0]):
        _mirror_lower(s2[ck])


@njit(**_JIT)
def tied_chunk(X, w, centre, LT, B, tile_rows, scalars, entropy, buf_xt, buf_y, buf_a,
               buf_rows, buf_log, buf_s, buf_mom, nk, sx, s2, ll, ent, status):
    """``'tied'``: ``LT`` (C, D + 1, D + 1) the candidates' extended shared factors,
    ``B`` (C, K, D + 1) their ``[b_k, a_k - ½|b_k|²]``; ``s2`` (D, D) accumulates
    ``sum_i w_i (x_i - c0)(x_i - c0)ᵀ`` once for the group (see
    :mod:`daskgmm.engine.covariance.tied`)."""
    _full_width()
    n, D = X.shape
    C, K = B.shape[0], B.shape[1]
    cut, half = scalars[0], scalars[1]
    has_w = w.size > 0
    for r0 in range(0, n, tile_rows):
        m = min(tile_rows, n - r0)
        xt = buf_xt[:(D + 1) * m].reshape((D + 1, m))
        if _centre(X, r0, m, centre, xt, 0):
            status[0], status[1] = NONFINITE_TILE, r0
            return
        Y = buf_y[:(D + 1) * m].reshape((D + 1, m))
        a = buf_a[:K * m].reshape((K, m))
        top, total, norms = buf_rows[0, :m], buf_rows[1, :m], buf_rows[2, :m]
        shifted = buf_a[K * m:2 * K * m].reshape((K, m))
        mom = buf_mom[:K * (D + 1)].reshape((K, D + 1))
        for c in range(C):
            np.dot(LT[c], xt, Y)
            _squared_norms(Y[:D], norms)
            np.dot(B[c], Y, a)
            for k in range(K):
                for i in range(m):
                    a[k, i] -= half * norms[i]
            t_ll, t_ent, bad = _softmax(a, w, r0, cut, entropy, top, total,
                                        shifted, buf_log)
            if bad:
                status[0], status[1] = LOG_LIKELIHOOD_OVERFLOW, r0
                return
            ll[c] += t_ll
            ent[c] += t_ent
            _first_moments(a, xt, mom, nk, sx, c * K)
        if has_w:  # the weights in the compute dtype (the ones row of xt without)
            for i in range(m):
                norms[i] = w[r0 + i]
        scatter_lower(xt[:D], norms if has_w else xt[D], buf_s)
        if _add_lower(buf_s, s2):
            status[0], status[1] = PRODUCTS_OVERFLOW, r0
            return
    _mirror_lower(s2)


@njit(**_JIT)
def variances_chunk(X, w, centre, W, squares, tile_rows, scalars, entropy, buf_z, buf_a,
                    buf_rows, buf_log, buf_mom, nk, sx, s2, ll, ent, status):
    """``'diag'`` (``squares`` 1) and ``'spherical'`` (``squares`` 2): ``W`` (C, K, R)
    the candidates' operands on the tile ``Z = [x - c0, 1, squares]ᵀ`` (R rows); ``s2``
    (C·K, R - D - 1) accumulates the moments of the squares (see
    :mod:`daskgmm.engine.covariance._variances`)."""
    _full_width()
    n, D = X.shape
    C, K, R = W.shape
    cut = scalars[0]
    for r0 in range(0, n, tile_rows):
        m = min(tile_rows, n - r0)
        Z = buf_z[:R * m].reshape((R, m))
        if _centre(X, r0, m, centre, Z, squares):
            status[0], status[1] = NONFINITE_TILE, r0
            return
        a = buf_a[:K * m].reshape((K, m))
        top, total = buf_rows[0, :m], buf_rows[1, :m]
        shifted = buf_a[K * m:2 * K * m].reshape((K, m))
        mom = buf_mom[:K * R].reshape((K, R))
        for c in range(C):
            np.dot(W[c], Z, a)
            t_ll, t_ent, bad = _softmax(a, w, r0, cut, entropy, top, total,
                                        shifted, buf_log)
            if bad:
                status[0], status[1] = LOG_LIKELIHOOD_OVERFLOW, r0
                return
            ll[c] += t_ll
            ent[c] += t_ent
            np.dot(a, Z.T, mom)
            overflow = 0
            for k in range(K):
                nk[c * K + k] += mom[k, D]
                for d in range(D):
                    sx[c * K + k, d] += mom[k, d]
                for j in range(R - D - 1):
                    v = mom[k, D + 1 + j]
                    overflow += (v - v) != 0
                    s2[c * K + k, j] += v
            if overflow:
                status[0], status[1] = PRODUCTS_OVERFLOW, r0
                return


# --------------------------------------------------------------------------------------
# the driver of one group (Python, once per chunk and group)
# --------------------------------------------------------------------------------------
#: Covariance types with a compiled kernel.
SUPPORTED = ("full", "tied", "diag", "spherical")


@njit(**_JIT)
def spd_inverses(A, inverse, half_log_det):
    """The inverse and half the log-determinant of every matrix of a stack of small
    symmetric positive definite matrices ``A`` ``(N, q, q)`` (float64), by Cholesky
    factorisation and triangular inversion in one compiled loop (for the missing blocks
    of the precisions, :mod:`daskgmm.engine.marginal`: LAPACK's one call per 5 x 5
    matrix costs more than the arithmetic). Returns -1, or the index of the first matrix
    that is not positive definite."""
    N, q = A.shape[0], A.shape[1]
    L = np.zeros((q, q))
    Li = np.zeros((q, q))
    for b in range(N):
        total = 0.0
        for j in range(q):
            s = A[b, j, j]
            for k in range(j):
                s -= L[j, k] * L[j, k]
            if not s > 0.0:
                return b
            d = math.sqrt(s)
            L[j, j] = d
            total += math.log(d)
            for i in range(j + 1, q):
                s = A[b, i, j]
                for k in range(j):
                    s -= L[i, k] * L[j, k]
                L[i, j] = s / d
        half_log_det[b] = total
        # Li = L^-1 (lower), by forward substitution.
        for j in range(q):
            Li[j, j] = 1.0 / L[j, j]
            for i in range(j + 1, q):
                s = 0.0
                for k in range(j, i):
                    s -= L[i, k] * Li[k, j]
                Li[i, j] = s / L[i, i]
        # A^-1 = Li^T Li (symmetric).
        for i in range(q):
            for j in range(i + 1):
                s = 0.0
                for k in range(i, q):
                    s += Li[k, i] * Li[k, j]
                inverse[b, i, j] = s
                inverse[b, j, i] = s
    return -1


def row_bytes(name: str, n_components: int, n_features: int, itemsize: int) -> int:
    """Workspace bytes per tile row of a compiled kernel (one candidate at a time, so
    independent of the number of candidates)."""
    K, D = n_components, n_features
    common = 2 * K + 3  # responsibilities, their copy for the entropy, rows
    tile = {"full": (D + 1) + K * D, "tied": 2 * (D + 1),
            "diag": 2 * D + 1, "spherical": D + 2}[name]
    return (common + tile) * itemsize


def group_statistics(X: np.ndarray, w: np.ndarray | None, centre: np.ndarray, batch,
                     n_candidates: int, dtype: np.dtype, entropy: bool, tile_rows: int,
                     ws) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Run the kernel of ``batch``'s type over the chunk ``X`` (C-contiguous) for a group
    of ``n_candidates`` candidates with the same number of components.

    Returns ``({"nk", "sx", "s2"} of the whole batch, float64), ll (C,), ent (C,),
    status`` (:data:`OK` or a code and the first row of the tile at fault)."""
    name = batch.cov.name
    n, D = X.shape
    C = n_candidates
    CK = batch.n_components
    K = CK // C
    m = max(1, min(tile_rows, n))
    weights = np.empty(0) if w is None else np.ascontiguousarray(w, dtype=np.float64)
    scalars = np.array([LOG_CUT[dtype.char], 0.5], dtype=dtype)
    nk, sx = np.zeros(CK), np.zeros((CK, D))
    ll, ent = np.zeros(C), np.zeros(C)
    status = np.zeros(2, dtype=np.int64)
    buf_a = ws.get("fused.a", (2 * K * m,), dtype)
    buf_rows = ws.get("fused.rows", (3, m), dtype)
    buf_log = ws.get("fused.log", (m,), np.float64)  # the rows' log-totals
    if name == "full":
        s2 = np.zeros((CK, D, D))
        full_chunk(X, weights, centre, batch.arrays["LT"].reshape(C, K * D, D + 1),
                   batch.arrays["constant"].reshape(C, K), m, scalars, entropy,
                   ws.get("fused.xt", ((D + 1) * m,), dtype),
                   ws.get("fused.y", (K * D * m,), dtype), buf_a, buf_rows, buf_log,
                   ws.get("fused.s", (D, D), dtype), ws.get("fused.mom", (K * (D + 1),), dtype),
                   nk, sx, s2, ll, ent, status)
    elif name == "tied":
        s2 = np.zeros((D, D))
        tied_chunk(X, weights, centre, batch.arrays["LT"], batch.arrays["B"], m, scalars,
                   entropy, ws.get("fused.xt", ((D + 1) * m,), dtype),
                   ws.get("fused.y", ((D + 1) * m,), dtype), buf_a, buf_rows, buf_log,
                   ws.get("fused.s", (D, D), dtype), ws.get("fused.mom", (K * (D + 1),), dtype),
                   nk, sx, s2, ll, ent, status)
    else:
        W = batch.arrays["W"]
        R = W.shape[1]
        s2 = np.zeros((CK, R - D - 1))
        variances_chunk(X, weights, centre, W.reshape(C, K, R), 1 if name == "diag" else 2,
                        m, scalars, entropy, ws.get("fused.z", (R * m,), dtype), buf_a,
                        buf_rows, buf_log, ws.get("fused.mom", (K * R,), dtype),
                        nk, sx, s2, ll, ent, status)
        if name == "spherical":
            s2 = s2[:, 0]
    return {"nk": nk, "sx": sx, "s2": s2}, ll, ent, status

