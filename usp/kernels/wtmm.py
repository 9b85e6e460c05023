# GENERATED FILE - DO NOT EDIT.
# Source: notebooks/01_wtmm.md (code cells tagged `export`).
# Edit the notebook, then run `make export`.

"""gaus1 continuous wavelet transform and the WTMM Hölder exponent, in JAX.

The CWT is an FFT convolution with precomputed filter spectra and equals ``pywt.cwt(signal,
scales, "gaus1")``. The Hölder exponent follows the wavelet-transform modulus-maxima method of
Muzy, Bacry and Arneodo: maxima lines linked across scales inside the cone |b - x0| <= C a, a
partition function over the lines, τ(q) by log-log regression and h(q) = τ'(q). Everything after
construction is jit-able, vmap-able and free of host callbacks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft
from jaxtyping import Array, Bool, Complex, Float, Int, UInt32

from usp.contracts.arrays import Flag, Scalar, ScalarLike, Signal
from usp.contracts.config import PredictorConfig


def dyadic_scales(n_scales: int = 40, first: float = 1.0, last: float = 6.0) -> np.ndarray:
    """Scales 2^linspace(first, last, n_scales): the spec's 40 scales from 2 to 64."""
    return 2.0 ** np.linspace(first, last, n_scales)


@functools.lru_cache(maxsize=8)
def gaus1_integrated(precision: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """PyWavelets' table of Ψ(x) = ∫_{-5}^{x} ψ(u) du for ψ = gaus1, on 2**precision points.

    Same recipe as ``pywt.integrate_wavelet``: sample ψ on [-5, 5] and take a running sum.
    """
    x = np.linspace(-5.0, 5.0, 2**precision)
    psi = -2.0 * x * np.exp(-(x**2)) / (np.pi / 2) ** 0.25
    int_psi = np.cumsum(psi) * (x[1] - x[0])
    int_psi.setflags(write=False)  # cached: shared by every caller
    x.setflags(write=False)
    return int_psi, x


def gaus1_filter(scale: float, precision: int = 12) -> tuple[np.ndarray, int]:
    """Taps g and centre c of eq. (cwt-discrete): W(a, i) = Σ_m s[m] g[i - m + c]."""
    int_psi, x = gaus1_integrated(precision)
    step = x[1] - x[0]
    # pywt reads the table at floor(k / (a·step)), k = 0 .. 10a: Ψ(k/a - 5), reversed.
    index = (np.arange(scale * (x[-1] - x[0]) + 1) / (scale * step)).astype(int)
    psi_a = int_psi[index[index < int_psi.size]][::-1]
    if psi_a.size < 2:
        raise ValueError(f"scale {scale} is too small for a gaus1 table of {int_psi.size} points")
    taps = -np.sqrt(scale) * np.diff(psi_a, prepend=0.0, append=0.0)
    return taps, (psi_a.size - 2) // 2 + 1


def filter_spectra(length: int, scales: np.ndarray, precision: int = 12) -> tuple[np.ndarray, int]:
    """rfft of every scale's filter, wrapped so that a circular convolution equals the linear one.

    Returns the spectra, shape (scales, fft_size // 2 + 1), and fft_size >= length + max lag
    (eq. circular). Lags |t| >= length never reach an output sample and are dropped.
    """
    filters = [gaus1_filter(float(a), precision) for a in scales]
    reach = min(length - 1, max(max(c, g.size - 1 - c) for g, c in filters))
    fft_size = scipy.fft.next_fast_len(length + reach, real=True)
    kernels = np.zeros((len(filters), fft_size))
    for row, (taps, centre) in zip(kernels, filters, strict=True):
        lag = np.arange(taps.size) - centre
        keep = np.abs(lag) < length
        row[lag[keep] % fft_size] = taps[keep]
    return np.fft.rfft(kernels, axis=-1), fft_size


class CWT(eqx.Module):
    """gaus1 CWT of signals of one fixed length, equal to ``pywt.cwt(signal, scales, "gaus1")``.

    The filter spectra depend only on (length, scales), so they are computed once here; a call
    costs one rfft, a (scales x frequencies) product and one batched irfft.
    """

    scales: Float[Array, " s"]
    spectra: Complex[Array, "s f"]
    length: int = eqx.field(static=True)
    fft_size: int = eqx.field(static=True)

    @classmethod
    def build(cls, length: int, scales: np.ndarray | None = None, *, precision: int = 12) -> CWT:
        scales = dyadic_scales() if scales is None else np.asarray(scales, dtype=float)
        spectra, fft_size = filter_spectra(length, scales, precision)
        return cls(jnp.asarray(scales), jnp.asarray(spectra), length, fft_size)

    def __call__(self, signal: Float[Array, " n"]) -> Float[Array, "s n"]:
        if signal.shape != (self.length,):
            raise ValueError(f"this CWT was built for length {self.length}, got {signal.shape}")
        spectrum = jnp.fft.rfft(signal, n=self.fft_size)
        coefs = jnp.fft.irfft(self.spectra * spectrum, n=self.fft_size, axis=-1)
        return coefs[:, : self.length]


class WindowedCWT(eqx.Module):
    """The same transform of a long signal, computed on overlapping windows of fixed length.

    Each window keeps only the columns whose filter support lies inside it (or runs past the
    signal's own end, where both see zeros), so the stitched result equals the full CWT
    column by column, the last window being aligned to the end of the signal.
    """

    window: CWT
    starts: Int[Array, " k"]
    source_window: Int[Array, " n"]
    source_column: Int[Array, " n"]
    length: int = eqx.field(static=True)

    @classmethod
    def build(
        cls,
        length: int,
        scales: np.ndarray | None = None,
        *,
        window: int = 1024,
        precision: int = 12,
    ) -> WindowedCWT:
        scales = dyadic_scales() if scales is None else np.asarray(scales, dtype=float)
        filters = [gaus1_filter(float(a), precision) for a in scales]
        back = max(c for _, c in filters)  # output i reads s[i - back] ...
        ahead = max(g.size - 1 - c for g, c in filters)  # ... up to s[i + ahead]
        if length <= window or window <= back + ahead:
            raise ValueError(
                f"need length > window > {back + ahead} (the largest filter), "
                f"got length {length}, window {window}"
            )
        starts, source_window, source_column = [], np.empty(length, int), np.empty(length, int)
        done = 0
        while done < length:
            start = min(max(done - back, 0), length - window)
            stop = length if start + window == length else start + window - ahead
            source_window[done:stop] = len(starts)
            source_column[done:stop] = np.arange(done, stop) - start
            starts.append(start)
            done = stop
        return cls(
            CWT.build(window, scales, precision=precision),
            jnp.asarray(starts),
            jnp.asarray(source_window),
            jnp.asarray(source_column),
            length,
        )

    def __call__(self, signal: Float[Array, " n"]) -> Float[Array, "s n"]:
        if signal.shape != (self.length,):
            raise ValueError(f"this CWT was built for length {self.length}, got {signal.shape}")
        chunks = signal[self.starts[:, None] + jnp.arange(self.window.length)]
        coefs = jax.vmap(self.window)(chunks)
        return coefs[self.source_window, :, self.source_column].T


def make_cwt(
    length: int,
    scales: np.ndarray | None = None,
    *,
    precision: int = 12,
    window: int = 1024,
) -> CWT | WindowedCWT:
    """A CWT for signals of ``length`` samples: windowed above ``window`` samples."""
    if length > window:
        return WindowedCWT.build(length, scales, window=window, precision=precision)
    return CWT.build(length, scales, precision=precision)


def l1_modulus(coefs: Float[Array, "s n"], scales: Float[Array, " s"]) -> Float[Array, "s n"]:
    """|T(a, b)| = |W(a, b)| / √a: pywt's L2-normalised W turned into eq. (cwt)'s L1 norm."""
    return jnp.abs(coefs) / jnp.sqrt(scales)[:, None]


def modulus_maxima(modulus: Float[Array, "s n"]) -> Bool[Array, "s n"]:
    """Local maxima in b of each row: above the left neighbour, not below the right one.

    Neighbours are real samples only (no wrap-around): the first and last columns, which
    have one neighbour, are never maxima. ``>=`` on the right keeps one point per plateau.
    """
    left, centre, right = modulus[:, :-2], modulus[:, 1:-1], modulus[:, 2:]
    inner = (centre > left) & (centre >= right)
    edge = jnp.zeros((modulus.shape[0], 1), dtype=bool)
    return jnp.concatenate([edge, inner, edge], axis=1)


WORD_BITS = 32
"""32-bit words: JAX has 64-bit integers only with x64 enabled, and float32 runs must agree."""


def pack_bits(marked: Bool[Array, " n"]) -> UInt32[Array, " w"]:
    """Bit j of word k is marked[32 k + j] (zero beyond n)."""
    n = marked.shape[0]
    n_words = -(-n // WORD_BITS)
    padded = jnp.zeros(n_words * WORD_BITS, bool).at[:n].set(marked)
    bit = jnp.left_shift(jnp.uint32(1), jnp.arange(WORD_BITS, dtype=jnp.uint32))
    # Distinct powers of two: their sum is their bitwise or.
    chosen = jnp.where(padded.reshape(n_words, WORD_BITS), bit, jnp.uint32(0))
    return jnp.sum(chosen, axis=1, dtype=jnp.uint32)


BIT_SEARCH_MAX_LENGTH = 256
"""Longest row searched with packed words: O(n²/32) work beats the O(n) prefix maxima only on
short rows (measured crossover between 256 and 512 samples on this CPU)."""


def nearest_marked(marked: Bool[Array, " n"]) -> Int[Array, " n"]:
    """For every position, the index of the nearest marked position (ties go left).

    Packed words (eq. bit-nearest) for rows up to BIT_SEARCH_MAX_LENGTH, prefix maxima for
    longer ones; both exact. The result is meaningless where nothing is marked; callers check
    ``marked.any()``.
    """
    if marked.shape[0] > BIT_SEARCH_MAX_LENGTH:  # static: the row length
        return nearest_marked_by_prefix(marked)
    return nearest_marked_by_bits(marked)


def nearest_marked_by_prefix(marked: Bool[Array, " n"]) -> Int[Array, " n"]:
    """Two prefix maxima over positions: O(n) work."""
    n = marked.shape[0]
    position = jnp.arange(n)
    left = jax.lax.cummax(jnp.where(marked, position, -2 * n), axis=0)
    right = jax.lax.cummin(jnp.where(marked, position, 3 * n), axis=0, reverse=True)
    nearest = jnp.where(position - left <= right - position, left, right)
    return jnp.clip(nearest, 0, n - 1)


def nearest_marked_by_bits(marked: Bool[Array, " n"]) -> Int[Array, " n"]:
    """Eq. (bit-nearest): the nearest marked position at or below (above) each position is read
    off the packed words with count-leading-zeros (trailing zeros): no n x n matrix, no scan."""
    n = marked.shape[0]
    words = pack_bits(marked)[:, None]
    word = jnp.arange(words.shape[0])[:, None]
    position = jnp.arange(n)
    own_word, bit = position // WORD_BITS, (position % WORD_BITS).astype(jnp.uint32)
    one, every, no = jnp.uint32(1), ~jnp.uint32(0), jnp.uint32(0)
    up_to_bit = jnp.left_shift(jnp.uint32(2), bit) - one  # wraps to every bit when bit = 31
    from_bit = ~(jnp.left_shift(one, bit) - one)
    below = words & jnp.where(word < own_word, every, jnp.where(word == own_word, up_to_bit, no))
    above = words & jnp.where(word > own_word, every, jnp.where(word == own_word, from_bit, no))
    highest = WORD_BITS * word + (WORD_BITS - 1) - jax.lax.clz(below).astype(word.dtype)
    lowest_bit = above & (~above + one)  # two's complement: isolates the lowest set bit
    lowest = WORD_BITS * word + jax.lax.population_count(lowest_bit - one).astype(word.dtype)
    left = jnp.max(jnp.where(below != 0, highest, -2 * n), axis=0)
    right = jnp.min(jnp.where(above != 0, lowest, 3 * n), axis=0)
    nearest = jnp.where(position - left <= right - position, left, right)
    return jnp.clip(nearest, 0, n - 1)


class MaximaLines(NamedTuple):
    """Maxima lines over a (scale, position) grid, finest scale first."""

    alive: Bool[Array, "s n"]
    """True at a maximum that lies on a line reaching down to the finest scale."""
    sup: Float[Array, "s n"]
    """sup of the modulus along that line over scales a' <= a (eq. partition); 0 elsewhere."""


def link_maxima_lines(
    modulus: Float[Array, "s n"],
    candidates: Bool[Array, "s n"],
    scales: Float[Array, " s"],
    cone_c: float,
    *,
    nearest: Callable[[Bool[Array, " n"]], Int[Array, " n"]] = nearest_marked,
) -> MaximaLines:
    """Chain maxima from fine to coarse scales inside the cone |b - x0| <= C a (eq. cone).

    Each maximum at scale a_j links to the nearest live maximum at a_{j-1}, inherits that
    line's origin x0 (its position at the finest scale) and lives only if |b - x0| <= C a_j.
    ``nearest`` finds that maximum (a benchmark swaps in the spec's distance matrix).
    """
    position = jnp.arange(modulus.shape[1])

    def one_scale(below, inputs):
        alive_below, sup_below, origin_below = below
        candidate, row, scale = inputs
        parent = nearest(alive_below)
        origin = origin_below[parent]
        in_cone = jnp.abs(position - origin) <= cone_c * scale
        alive = candidate & jnp.any(alive_below) & in_cone
        sup = jnp.where(alive, jnp.maximum(row, sup_below[parent]), 0.0)
        return (alive, sup, origin), (alive, sup)

    finest = (candidates[0], jnp.where(candidates[0], modulus[0], 0.0), position)
    rest = (candidates[1:], modulus[1:], scales[1:])
    _, (alive, sup) = jax.lax.scan(one_scale, finest, rest)
    return MaximaLines(
        jnp.concatenate([finest[0][None], alive]), jnp.concatenate([finest[1][None], sup])
    )


class PartitionFunction(NamedTuple):
    """log Z(q, a) of eq. (partition) and the Boltzmann mean of ln sup|T| of eq. (hq)."""

    log_z: Float[Array, "q s"]
    mean_log_sup: Float[Array, "q s"]
    line_count: Int[Array, " s"]


def partition_function(lines: MaximaLines, q: tuple[float, ...]) -> PartitionFunction:
    """Z(q, a) = Σ_lines sup^q and h(q, a) = Σ_lines w_q ln sup, w_q = sup^q / Z (eq. hq).

    Each scale's values are divided by their largest (smallest for q < 0) before the power, so
    nothing overflows; a scale without lines gets Z = 1, h = 0 and must be given zero weight.
    """
    count = jnp.sum(lines.alive, axis=1)
    sup = jnp.where(lines.alive, lines.sup, 0.0)
    largest = jnp.max(sup, axis=1)
    smallest = jnp.min(jnp.where(lines.alive, lines.sup, jnp.inf), axis=1)
    log_z, mean_log_sup = [], []
    for power in q:
        ref = jnp.where(count > 0, largest if power >= 0 else smallest, 1.0)
        ratio = jnp.where(lines.alive, sup / ref[:, None], 1.0)
        log_ratio = jnp.log(ratio)
        if float(power).is_integer():  # repeated products: cheaper than exp and log
            boltzmann = jnp.where(lines.alive, ratio ** int(power), 0.0)
        else:
            boltzmann = jnp.where(lines.alive, jnp.exp(power * log_ratio), 0.0)
        total = jnp.sum(boltzmann, axis=1)
        safe_total = jnp.where(total > 0, total, 1.0)
        log_z.append(power * jnp.log(ref) + jnp.log(safe_total))
        mean_log_sup.append(jnp.log(ref) + jnp.sum(boltzmann * log_ratio, axis=1) / safe_total)
    return PartitionFunction(jnp.stack(log_z), jnp.stack(mean_log_sup), count)


def weighted_slope(
    x: Float[Array, " s"], y: Float[Array, "*batch s"], weight: Float[Array, " s"]
) -> Float[Array, "*batch"]:
    """Weighted least-squares slope of y on x (eq. wls)."""
    x_bar = jnp.sum(weight * x) / jnp.sum(weight)
    dx = x - x_bar
    return jnp.sum(weight * dx * y, axis=-1) / jnp.sum(weight * dx**2)


class PreparedBuffer(NamedTuple):
    """A buffer ready for the CWT, with what the validity flag needs to know."""

    signal: Float[Array, " n"]
    """Observations minus their mean; exactly 0 before ``start`` and where not finite."""
    start: Int[Array, ""]
    """Index of the oldest valid sample: the last ``n_valid`` entries are the data."""
    usable: Flag
    """All valid samples finite, and the buffer not affine (constant or a straight line)."""


def prepare_buffer(buffer: Signal, n_valid: Int[Array, ""]) -> PreparedBuffer:
    """Mask the unfilled head, centre the data and flag non-finite or affine buffers."""
    n = buffer.shape[0]
    position = jnp.arange(n)
    start = jnp.clip(n - n_valid, 0, n - 1)
    in_data = position >= start
    finite = jnp.all(jnp.isfinite(buffer) | ~in_data)
    x = jnp.where(in_data & jnp.isfinite(buffer), buffer, 0.0)
    x = jnp.where(in_data, x - jnp.sum(x) / jnp.maximum(n_valid, 1), 0.0)
    # An affine buffer has no roughness to measure: its second differences are rounding only.
    curvature = jnp.abs(x[2:] - 2.0 * x[1:-1] + x[:-2])
    roughness = jnp.max(jnp.where(in_data[:-2], curvature, 0.0))
    rough = roughness > 64 * jnp.finfo(x.dtype).eps * jnp.max(jnp.abs(x))
    return PreparedBuffer(x, start, finite & rough)


def reflect_head(signal: Signal, start: Int[Array, ""]) -> Signal:
    """The unfilled head (positions < start) filled by point reflection about ``start``,
    x(start - k) = 2 x(start) - x(start + k), held constant beyond the data (eq. odd-ext)."""
    last = signal.shape[0] - 1
    u = jnp.arange(last + 1)
    below = 2.0 * signal[start] - signal[jnp.clip(2 * start - u, start, last)]
    return jnp.where(u < start, below, signal)


def odd_extension(signal: Signal, extension: int) -> Float[Array, " m"]:
    """A full signal extended by point reflection about both ends (eq. odd-ext).

    The reflection continues the path and its local slope through each end, so the wavelet,
    blind to constants and nearly blind to lines, sees no edge singularity. Beyond the
    available data the reflection is held constant. Length n + 2 * extension.
    """
    last = signal.shape[0] - 1
    u = jnp.arange(-extension, last + 1 + extension)
    below = 2.0 * signal[0] - signal[jnp.clip(-u, 0, last)]
    above = 2.0 * signal[last] - signal[jnp.clip(2 * last - u, 0, last)]
    return jnp.where(u < 0, below, jnp.where(u > last, above, signal[jnp.clip(u, 0, last)]))


def extended_cwt(cwt: CWT | WindowedCWT, signal: Signal, extension: int) -> Float[Array, "s m"]:
    """W(a, b) of the centred odd extension, for b from one sample before the signal to one
    after it (the maxima test needs a neighbour on each side)."""
    extended = odd_extension(signal, extension)
    n = signal.shape[0]
    return cwt(extended - jnp.mean(extended))[:, extension - 1 : extension + n + 1]


def cwt_matrix(cwt: CWT, length: int, extension: int) -> Float[Array, "n sm"]:
    """K of eq. (cwt-matrix): row m is ``extended_cwt`` of the m-th unit vector, flattened."""
    basis = jnp.eye(length)
    rows = jax.jit(jax.vmap(lambda e: extended_cwt(cwt, e, extension)))(basis)
    return rows.reshape(length, -1)


def cast_floats(tree, dtype: str):
    """Every real array leaf of ``tree`` in ``dtype``, every complex one in its complex
    counterpart; integer leaves and None as they are."""
    complex_dtype = jnp.result_type(dtype, jnp.complex64)

    def cast(leaf):
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jnp.complexfloating):
            return leaf.astype(complex_dtype)
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.astype(dtype)
        return leaf

    return jax.tree_util.tree_map(cast, tree)


class WTMMSpectrum(eqx.Module):
    """Everything the WTMM estimate is made of, for one buffer."""

    q: Float[Array, " q"]
    tau: Float[Array, " q"]
    """τ(q), eq. (tau)."""
    h: Float[Array, " q"]
    """h(q) = τ'(q), eq. (hq)."""
    log_z: Float[Array, "q s"]
    mean_log_sup: Float[Array, "q s"]
    line_count: Int[Array, " s"]
    scale_weight: Float[Array, " s"]
    """Regression weight of each scale (its line count; 0 when the scale is not used)."""
    holder: Scalar
    """min_q h(q) when valid, else 0.5."""
    valid: Flag


class WTMMEstimator(eqx.Module):
    """WTMM Hölder exponent of a buffer of fixed length (built once, called every tick).

    ``spectrum(buffer, n_valid)`` returns the whole multifractal fit, ``__call__`` just
    ``(h, valid)``. The last ``n_valid`` entries of ``buffer`` are the data (oldest first); a
    buffer with non-finite data, an affine buffer, fewer than ``min_samples`` valid samples or
    fewer than three usable scales gives ``h = 0.5, valid = False``.
    """

    cwt: CWT | WindowedCWT
    matrix: Float[Array, "n sm"] | None
    """K of eq. (cwt-matrix) for buffers up to ``dense_limit`` samples, else None (FFT)."""
    scales: Float[Array, " s"]
    q: tuple[float, ...] = eqx.field(static=True)
    compute_dtype: str = eqx.field(static=True)
    """dtype of the transform and everything after it; the buffer is centred in its own."""
    buffer_size: int = eqx.field(static=True)
    extension: int = eqx.field(static=True)
    cone_c: float = eqx.field(static=True)
    edge_c: float = eqx.field(static=True)
    min_scale: float = eqx.field(static=True)
    max_scale_fraction: float = eqx.field(static=True)
    min_samples: int = eqx.field(static=True)

    @classmethod
    def build(
        cls,
        buffer_size: int,
        *,
        scales: np.ndarray | None = None,
        q: tuple[float, ...] = (0.0, 1.0, 2.0),
        cone_c: float = 1.5,
        edge_c: float = 0.5,
        min_scale: float = 3.0,
        max_scale_fraction: float = 0.25,
        min_samples: int = 32,
        precision: int = 18,
        window: int = 1024,
        reach: float = 3.0,
        dense_limit: int = 256,
        compute_dtype: str | None = None,
    ) -> WTMMEstimator:
        """Precompute the CWT for ``buffer_size``; see the notebook for each default.

        ``compute_dtype`` (default: JAX's default float) is the precision of the transform,
        the maxima and the fit; the predictor's estimator uses float32 (eq. float32-error).
        """
        compute_dtype = jnp.dtype(compute_dtype or jnp.result_type(float)).name
        scales = dyadic_scales() if scales is None else np.asarray(scales, dtype=float)
        # Scales above max_scale_fraction * buffer_size are never used: do not compute them.
        scales = scales[scales <= max_scale_fraction * buffer_size]
        if scales.size < 3:
            raise ValueError(f"buffer_size {buffer_size} leaves {scales.size} usable scales (< 3)")
        extension = int(min(buffer_size - 1, math.ceil(reach * scales.max())))
        length = buffer_size + 2 * extension
        if buffer_size > window:
            cwt = WindowedCWT.build(length, scales, window=window, precision=precision)
        else:
            cwt = CWT.build(length, scales, precision=precision)
        dense = buffer_size <= dense_limit
        matrix = cwt_matrix(cwt, buffer_size, extension) if dense else None
        # Built in full precision, then rounded once: a float32 K is the float64 K, rounded.
        cwt, matrix, scales = cast_floats((cwt, matrix, jnp.asarray(scales)), compute_dtype)
        return cls(
            cwt,
            matrix,
            scales,
            tuple(float(p) for p in q),
            compute_dtype,
            buffer_size,
            extension,
            float(cone_c),
            float(edge_c),
            float(min_scale),
            float(max_scale_fraction),
            int(min_samples),
        )

    @classmethod
    def from_config(cls, config: PredictorConfig, **overrides) -> WTMMEstimator:
        """The estimator the predictor uses: buffer size, cone, scales and minimum from config."""
        settings = dict(
            scales=dyadic_scales(config.wtmm_n_scales),
            cone_c=config.besov_cone_c,
            min_samples=config.holder_min_samples,
            compute_dtype="float32",  # eq. (float32-error): the same decisions, half the cost
        )
        buffer_size = overrides.pop("buffer_size", config.wtmm_buffer_size)
        return cls.build(buffer_size, **settings | overrides)

    @property
    def rounding_rtol(self) -> float:
        """How closely two evaluations that differ only in summation order (a batch's matrix
        product against one buffer's matrix-vector product) agree: 8 ulps of compute_dtype."""
        return 8 * float(jnp.finfo(self.compute_dtype).eps)

    def lines(self, prepared: PreparedBuffer) -> MaximaLines:
        """CWT of the extended buffer, modulus maxima away from the edges, linked into lines."""
        n = self.buffer_size
        coefs = self.coefficients(prepared)
        modulus = l1_modulus(coefs, self.scales)
        maxima = modulus_maxima(modulus)[:, 1:-1]
        position = jnp.arange(n)
        edge_distance = jnp.minimum(position - prepared.start, n - 1 - position)
        away_from_edges = edge_distance[None, :] >= self.edge_c * self.scales[:, None]
        return link_maxima_lines(
            modulus[:, 1:-1], maxima & away_from_edges, self.scales, self.cone_c
        )

    def coefficients(self, prepared: PreparedBuffer) -> Float[Array, "s n2"]:
        """W(a, b) of the buffer, its head filled, for b = -1 .. n (eq. cwt-matrix)."""
        signal = reflect_head(prepared.signal.astype(self.compute_dtype), prepared.start)
        if self.matrix is None:  # static: fixed when the estimator is built
            return extended_cwt(self.cwt, signal, self.extension)
        # HIGHEST: a GPU's default float32 product rounds its inputs to TF32 (10 bits), far
        # outside eq. (float32-error); on a CPU it changes nothing.
        coefs = jnp.matmul(signal, self.matrix, precision=jax.lax.Precision.HIGHEST)
        return coefs.reshape(self.scales.shape[0], self.buffer_size + 2)

    def spectrum(self, buffer: Signal, n_valid: int | Int[Array, ""] | None = None) -> WTMMSpectrum:
        if buffer.shape != (self.buffer_size,):
            raise ValueError(f"estimator built for {self.buffer_size} samples, got {buffer.shape}")
        n_valid = jnp.clip(jnp.asarray(self.buffer_size if n_valid is None else n_valid), 0, None)
        n_valid = jnp.minimum(n_valid, self.buffer_size)
        prepared = prepare_buffer(buffer, n_valid)
        pf = partition_function(self.lines(prepared), self.q)
        in_range = (self.scales >= self.min_scale) & (
            self.scales <= self.max_scale_fraction * n_valid
        )
        used = in_range & (pf.line_count >= 2)
        enough_scales = jnp.sum(used) >= 3
        # Line counts estimate the inverse variance of h(q, a): weight the regression by them.
        weight = jnp.where(used, pf.line_count, 0).astype(pf.log_z.dtype)
        safe_weight = jnp.where(enough_scales, weight, 1.0)
        log_a = jnp.log(self.scales)
        tau = weighted_slope(log_a, jnp.where(used, pf.log_z, 0.0), safe_weight)
        h = weighted_slope(log_a, jnp.where(used, pf.mean_log_sup, 0.0), safe_weight)
        strongest = jnp.min(h)
        valid = (
            prepared.usable
            & enough_scales
            & (n_valid >= self.min_samples)
            & jnp.isfinite(strongest)
        )
        return WTMMSpectrum(
            jnp.asarray(self.q, dtype=tau.dtype),
            tau,
            h,
            pf.log_z,
            pf.mean_log_sup,
            pf.line_count,
            weight,
            jnp.where(valid, strongest, 0.5).astype(prepared.signal.dtype),
            valid,
        )

    def __call__(
        self, buffer: Signal, n_valid: int | Int[Array, ""] | None = None
    ) -> tuple[Scalar, Flag]:
        spectrum = self.spectrum(buffer, n_valid)
        return spectrum.holder, spectrum.valid


@functools.lru_cache(maxsize=16)
def estimator_for(config: PredictorConfig, buffer_size: int) -> WTMMEstimator:
    """One estimator per (config, buffer size): the CWT matrix is built only once."""
    return WTMMEstimator.from_config(config, buffer_size=buffer_size)


def holder_exponent(
    estimator: WTMMEstimator | PredictorConfig,
    buffer: Signal,
    n_valid: int | Int[Array, ""] | None = None,
) -> tuple[Scalar, Flag]:
    """Hölder exponent H_t of the buffer and its validity flag, with no gradient (SIA-4).

    H_t is a diagnostic of the past path, never a quantity to optimise through: the
    orchestrator's losses must not move the buffer to change it, hence ``stop_gradient``.
    Invalid buffers (see ``WTMMEstimator``) give H_t = 0.5.
    """
    if isinstance(estimator, PredictorConfig):
        estimator = estimator_for(estimator, buffer.shape[0])
    h, valid = estimator(buffer, n_valid)
    return jax.lax.stop_gradient(h), jax.lax.stop_gradient(valid)


__all__ = [
    "BIT_SEARCH_MAX_LENGTH",
    "BREAKER_JUMP_SIGMA",
    "BREAKER_RECENT",
    "CWT",
    "MEAN_ABS_SIGMA",
    "WORD_BITS",
    "BreakerReading",
    "MaximaLines",
    "PartitionFunction",
    "PreparedBuffer",
    "WTMMEstimator",
    "WTMMSpectrum",
    "WindowedCWT",
    "cast_floats",
    "circuit_breaker",
    "cwt_matrix",
    "dyadic_scales",
    "estimator_for",
    "extended_cwt",
    "filter_spectra",
    "gaus1_filter",
    "gaus1_integrated",
    "holder_exponent",
    "l1_modulus",
    "link_maxima_lines",
    "make_cwt",
    "modulus_maxima",
    "nearest_marked",
    "nearest_marked_by_bits",
    "nearest_marked_by_prefix",
    "odd_extension",
    "pack_bits",
    "partition_function",
    "prepare_buffer",
    "recent_jump",
    "reflect_head",
    "weighted_slope",
]


MEAN_ABS_SIGMA = math.sqrt(math.pi / 2)
"""σ / E|ε| for Gaussian ε (eq. jump-ratio)."""

BREAKER_JUMP_SIGMA = 8.0
"""c_J of eq. (breaker): the jump gate, in standard deviations of the other increments."""

BREAKER_RECENT = 16
"""m of eq. (breaker): how many of the newest increments the jump gate reads."""


class BreakerReading(NamedTuple):
    """What the circuit breaker read in one buffer; no field carries a gradient."""

    holder: Scalar
    """H_t, exactly as ``holder_exponent`` returns it (0.5 when not valid)."""
    valid: Flag
    """``holder_exponent``'s validity flag."""
    jump: Scalar
    """J_t of eq. (jump-ratio): the largest recent increment in σ of the other increments."""
    trips: Flag
    """Eq. (breaker): valid, H_t below the threshold and J_t above the gate: emergency mode."""


def recent_jump(
    buffer: Signal,
    n_valid: int | Int[Array, ""] | None = None,
    recent: int = BREAKER_RECENT,
) -> Scalar:
    """J_t of eq. (jump-ratio), with no gradient: the largest of the ``recent`` newest
    |increments|, M, over σ̃ = MEAN_ABS_SIGMA · (mean |increment| of all the others).

    Only increments between valid samples (the last ``n_valid`` entries) count. A buffer whose
    other increments are all 0 reads 1/eps when it moves (a jump out of a frozen price) and 0
    when it does not; one with non-finite data (``holder_exponent`` flags it invalid) reads 0.
    """
    n = buffer.shape[0]
    if not 1 <= recent < n:
        raise ValueError(f"recent must lie in [1, {n - 1}], got {recent}")
    n_valid = jnp.clip(jnp.asarray(n if n_valid is None else n_valid), 0, n)
    step = jnp.where(jnp.arange(n - 1) >= n - n_valid, jnp.abs(jnp.diff(buffer)), 0.0)
    newest = jnp.max(step[-recent:])
    others = (jnp.sum(step) - newest) / jnp.maximum(n_valid - 2, 1)
    scale = jnp.maximum(MEAN_ABS_SIGMA * others, jnp.finfo(step.dtype).eps * newest)
    ratio = jnp.where(newest > 0, newest / jnp.where(scale > 0, scale, 1.0), 0.0)
    return jax.lax.stop_gradient(jnp.where(jnp.isfinite(ratio), ratio, 0.0))


def circuit_breaker(
    estimator: WTMMEstimator | PredictorConfig,
    buffer: Signal,
    n_valid: int | Int[Array, ""] | None = None,
    threshold: ScalarLike | None = None,
    *,
    jump_sigma: ScalarLike = BREAKER_JUMP_SIGMA,
    recent: int = BREAKER_RECENT,
) -> BreakerReading:
    """Eq. (breaker): trip when the buffer's strongest singularity is strong (H_t below
    ``threshold``) and recent (one of the ``recent`` newest increments above ``jump_sigma``
    standard deviations of the other increments).

    ``threshold`` defaults to ``holder_threshold`` of ``estimator`` when it is a config, else
    of the default config. One WTMM pass, the same as ``holder_exponent``'s, and a sum over
    the increments; jit-able and vmap-able (``recent`` is static).
    """
    if threshold is None:
        config = estimator if isinstance(estimator, PredictorConfig) else PredictorConfig()
        threshold = config.holder_threshold
    holder, valid = holder_exponent(estimator, buffer, n_valid)
    jump = recent_jump(buffer, n_valid, recent)
    trips = valid & (holder < threshold) & (jump > jump_sigma)
    return BreakerReading(holder, valid, jump, trips)
