"""The numba kernels held to their numpy references on random shapes and options."""

import numba
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from edgelstm.kernels import activations, blas, cpu, packed, reference
from edgelstm.kernels.packed import PackedMatrix
from edgelstm.kernels.vectors import largest_magnitude

CODES = list(activations.CODES.values())
GATE_CODES = [c for name, c in activations.CODES.items() if "softmax" not in name]
BOUNDED_CODES = [activations.CODES[n] for n in ("sigmoid", "tanh", "hard_sigmoid", "hard_sigmoid_legacy")]
# Gates open in [0, 1]: a GRU gated by tanh lets 1 - z reach 2, its state explodes over a few steps
# and any two float32 orderings of the same sums drift apart beyond tolerance (float64 agrees).
UNIT_CODES = [activations.CODES[n] for n in ("sigmoid", "hard_sigmoid", "hard_sigmoid_legacy")]
TOL = dict(atol=2e-5, rtol=1e-5)

examples = settings(max_examples=25, deadline=None)


def arrays(rng, *shape, scale=0.5):
    return (rng.normal(0.0, scale, shape)).astype(np.float32)


@st.composite
def recurrent_case(draw):
    return dict(
        seed=draw(st.integers(0, 2**31)),
        # batches past 8 take the parallel path, past 4 the four-row product; 8+ units its eight-row passes
        batch=draw(st.integers(1, 10)), steps=draw(st.integers(1, 6)),
        features=draw(st.integers(1, 11)), units=draw(st.integers(1, 19)), onnx_options=draw(st.booleans()),
        act=draw(st.sampled_from(GATE_CODES)), rec_act=draw(st.sampled_from(UNIT_CODES)),
        out_act=draw(st.sampled_from(BOUNDED_CODES)),
        go_backwards=draw(st.booleans()), return_sequences=draw(st.booleans()),
        zero_output_for_mask=draw(st.booleans()), masked=draw(st.booleans()),
    )


def _run_both(kind, case, packed=False):
    """(reference, cpu) outputs and states; `packed`: the cpu kernel gets both matrices as
    PackedMatrix, as the runtime gives them."""
    rng = np.random.default_rng(case["seed"])
    b, t, f, h = case["batch"], case["steps"], case["features"], case["units"]
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    x = arrays(rng, b, t, f, scale=1.5)
    mask = rng.random((b, t)) > 0.3 if case["masked"] else np.ones((b, t), bool)
    # recurrent weights scaled like Keras's initialisers (spectral radius about 1): larger ones make
    # the cell expansive, and any two float32 roundings then drift apart step by step
    weights = [arrays(rng, f, gates * h), arrays(rng, h, gates * h, scale=0.9 / np.sqrt(h)), arrays(rng, gates * h)]
    states = [arrays(rng, b, h) for _ in range(2 if kind == "lstm" else 1)]
    results = []
    for module in (reference, cpu):
        if module is cpu and packed:
            weights[:2] = [PackedMatrix.from_matrix(w) for w in weights[:2]]
        own_states = [s.copy() for s in states]
        out = np.zeros((b, t if case["return_sequences"] else 1, h), np.float32)
        flags = (case["go_backwards"], case["return_sequences"], case["zero_output_for_mask"])
        if kind == "lstm":
            extra = case["onnx_options"]
            peephole = arrays(np.random.default_rng(case["seed"] + 2), 3 * h)
            peephole = peephole if extra and case["seed"] % 3 else peephole[:0]
            module.lstm(x, mask, *weights, peephole, case["act"], case["rec_act"], case["out_act"],
                        0.3 * (case["seed"] % 2) * extra, extra and case["seed"] % 5 == 0, *flags, *own_states, out)
        elif kind == "gru":
            module.gru(x, mask, *weights, arrays(np.random.default_rng(case["seed"] + 1), gates * h),
                       case["act"], case["rec_act"], case["seed"] % 2 == 0, *flags, *own_states, out)
        else:
            module.rnn(x, mask, *weights, case["act"], *flags, *own_states, out)
        results.append((out, own_states))
    return results


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@examples
@given(case=recurrent_case())
def test_recurrent_kernels_match_reference(kind, packed, case):
    (ref_out, ref_states), (cpu_out, cpu_states) = _run_both(kind, case, packed)
    np.testing.assert_allclose(cpu_out, ref_out, **TOL)
    for a, b in zip(cpu_states, ref_states):
        np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("batch, threads", [(cpu._BLAS_ROWS, 1), (77, 1), (77, 2)])
def test_large_batches_through_sgemm_match_reference(kind, batch, threads, packed):
    """Every row block of cpu._BLAS_ROWS rows or more takes sgemm (a PackedMatrix: its panels, four
    rows at a time, where the CPU has AVX-512), one block per thread."""
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    case = dict(seed=batch, batch=batch, steps=3, features=cpu._BLAS_INPUTS + 3, units=cpu._BLAS_INPUTS + 1,
                onnx_options=False, act=activations.TANH, rec_act=activations.SIGMOID, out_act=activations.TANH,
                go_backwards=False, return_sequences=True, zero_output_for_mask=False, masked=True)
    try:
        (ref_out, ref_states), (cpu_out, cpu_states) = _run_both(kind, case, packed)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_allclose(cpu_out, ref_out, **TOL)
    for a, b in zip(cpu_states, ref_states):
        np.testing.assert_allclose(a, b, **TOL)


@examples
@given(seed=st.integers(0, 2**31), rows=st.integers(1, 9), inputs=st.integers(1, 70), width=st.integers(1, 200),
       data=st.data())
def test_packed_product_matches_numpy_over_any_columns(seed, rows, inputs, width, data):
    """Whole and partial panels, column ranges that start and end inside them (a GRU's gates),
    rows under 8 (panels) and 8 or more (the row-major matrix); panels in either order, the same sums."""
    j0 = data.draw(st.integers(0, width - 1))
    j1 = data.draw(st.integers(j0 + 1, width))
    rng = np.random.default_rng(seed)
    a, w, z = arrays(rng, rows, inputs), arrays(rng, inputs, width), arrays(rng, rows, width)
    expected = z.copy()
    expected[:, j0:j1] += a @ w[:, j0:j1]
    matrix = PackedMatrix.from_matrix(w)
    assert matrix.panels.shape == (-(-width // packed.PANEL), inputs, packed.PANEL)
    np.testing.assert_array_equal(matrix.panels.transpose(1, 0, 2).reshape(inputs, -1)[:, :width], w)
    backwards = z.copy()
    cpu.add_packed_product(z, a, matrix, j0, j1, False)
    np.testing.assert_allclose(z, expected, **TOL)
    cpu.add_packed_product(backwards, a, matrix, j0, j1, True)
    np.testing.assert_array_equal(backwards, z)


@numba.njit
def _four_rows_at_a_time(z, a, w, j0, j1):
    for panel in range(j0 // packed.PANEL, -(-j1 // packed.PANEL)):
        start = panel * packed.PANEL
        lo, hi = max(j0 - start, 0), min(j1 - start, packed.PANEL)
        for first in range(0, a.shape[0] - 3, 4):
            packed.panel_product_4(z, a, first, w.panels, panel, lo, hi)


@pytest.mark.parametrize("inputs, width, j0, j1", [(70, 200, 0, 200), (33, 130, 10, 129), (5, 64, 0, 64)])
def test_the_four_row_panel_product_matches_numpy_on_any_cpu(inputs, width, j0, j1):
    """The four-row kernel, whichever `packed.ROWS_PER_PASS` this CPU gets (without AVX-512 its sums
    spill, but stay right)."""
    rng = np.random.default_rng(inputs)
    a, w, z = arrays(rng, 8, inputs), arrays(rng, inputs, width), arrays(rng, 8, width)
    expected = z.copy()
    expected[:, j0:j1] += a @ w[:, j0:j1]
    _four_rows_at_a_time(z, a, PackedMatrix.from_matrix(w), j0, j1)
    np.testing.assert_allclose(z, expected, **TOL)


@numba.njit
def _largest_magnitudes(a):
    """largest_magnitude of each row of a, and of each column (a strided view)."""
    rows = np.empty(a.shape[0], np.float32)
    cols = np.empty(a.shape[1], np.float32)
    for i in range(a.shape[0]):
        rows[i] = largest_magnitude(a[i])
    for j in range(a.shape[1]):
        cols[j] = largest_magnitude(a[:, j])
    return rows, cols


@examples
@given(seed=st.integers(0, 2**31), rows=st.integers(1, 5), cols=st.integers(0, 300))
def test_largest_magnitude_matches_numpy(seed, rows, cols):
    a = arrays(np.random.default_rng(seed), rows, cols) * 100
    got_rows, got_cols = _largest_magnitudes(a)
    np.testing.assert_array_equal(got_rows, np.abs(a).max(axis=1, initial=0))
    np.testing.assert_array_equal(got_cols, np.abs(a).max(axis=0, initial=0))


def test_largest_magnitude_of_special_values():
    a = np.array([[-0.0, 0.0, 0.0], [1.0, -np.inf, 2.0], [1.0, np.nan, 3.0], [-1e-40, 1e-41, 0.0]], np.float32)
    got, _ = _largest_magnitudes(a)
    assert got[0] == 0.0 and not np.signbit(got[0])
    assert got[1] == np.inf and np.isnan(got[2])
    assert got[3] == np.float32(1e-40)  # subnormals order as their bits do


@numba.njit
def _split_product(address, z, a, w, j0, j1, backwards, parts):
    cpu._call_split(address, z, a, w, j0, j1, backwards, parts)


@pytest.mark.parametrize("rows, parts, j0, j1", [(1, 2, 0, 1024), (3, 3, 70, 1000), (7, 2, 512, 768), (2, 5, 0, 130)])
def test_a_product_split_over_threads_matches_the_serial_one(rows, parts, j0, j1):
    """`_split_packed_product` (reached by address) for column ranges inside panels, more parts
    than threads and input rows apart in memory: the serial product's sums exactly."""
    rng = np.random.default_rng(rows)
    w = PackedMatrix.from_matrix(arrays(rng, 40, 1024))
    a = arrays(rng, rows, 3, 40)[:, 1]  # rows 120 floats apart
    z = arrays(rng, rows, 1024)
    serial = z.copy()
    cpu.add_packed_product(serial, a, w, j0, j1, False)
    _split_product(cpu._split_packed_product().address, z, a, w, j0, j1, True, parts)
    np.testing.assert_array_equal(z, serial)


_WITHOUT_AVX512 = """
import numpy as np
from edgelstm.kernels import cpu, packed
from edgelstm.kernels.packed import PackedMatrix
assert packed.ROWS_PER_PASS == 1 and cpu._PACKED_MAX_ROWS == cpu._BLAS_ROWS
rng = np.random.default_rng(0)
for rows in (1, 5, 9):
    a, w, z = (rng.normal(0, 0.5, s).astype(np.float32) for s in ((rows, 40), (40, 150), (rows, 150)))
    expected = z.copy()
    expected[:, 20:140] += a @ w[:, 20:140]
    cpu.add_packed_product(z, a, PackedMatrix.from_matrix(w), 20, 140, False)
    np.testing.assert_allclose(z, expected, atol=2e-5, rtol=1e-5)
# int8: pairs of rows (vpmaddwd), not VNNI's groups of four; integer sums exact
from edgelstm.kernels import quantized
assert quantized.GROUP == 2
values = rng.integers(-127, 128, (67, 130)).astype(np.int8)
matrix = quantized.QuantizedMatrix.from_values(values, np.full(130, 0.01, np.float32))
a, z = rng.normal(0, 1, (3, 67)).astype(np.float32), np.zeros((3, 130), np.float32)
scratch = (np.full((3, 68), 5, np.int8), np.empty((3, 192), np.int32), np.empty(3, np.float32))
cpu.add_quantized_product(z, a, matrix, scratch, 0, 130, False)
q, _ = quantized.quantize_rows(a)
np.testing.assert_array_equal(scratch[1][:, :130], q.astype(np.int64) @ values.astype(np.int64))
"""


@pytest.mark.parametrize("setting", [{"NUMBA_CPU_NAME": "generic"}, {"NUMBA_ENABLE_AVX": "0"}],
                         ids=["generic", "avx-off"])
def test_kernels_built_for_a_cpu_without_avx512_match_numpy(tmp_path, setting):
    """NUMBA_CPU_NAME=generic (a portable cache), or NUMBA_ENABLE_AVX=0 on any host, compiles without
    AVX-512: rows one at a time, sgemm from 8, the 512-bit vectors split in two, int8 products on
    pairs of rows."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), **setting)
    env.pop("NUMBA_CPU_FEATURES", None)
    subprocess.run([sys.executable, "-c", _WITHOUT_AVX512], env=env, check=True, timeout=600)


def test_portable_sgemm_matches_numpy_on_strided_rows():
    """The stand-in used where numpy has no OpenBLAS: z[:, 3:10] = 0.5 z + 2 a[:, :5] @ w[:, 3:10]."""
    rng = np.random.default_rng(0)
    a, w, z = arrays(rng, 4, 8), arrays(rng, 5, 12), arrays(rng, 4, 11)
    expected = z.copy()
    expected[:, 3:10] = 0.5 * z[:, 3:10] + 2.0 * a[:, :5] @ w[:, 3:10]
    blas._portable_sgemm.ctypes(101, 111, 111, 4, 7, 5, 2.0, a.ctypes.data, 8, w[:, 3:].ctypes.data, 12, 0.5,
                                z[:, 3:].ctypes.data, 11)
    np.testing.assert_allclose(z, expected, **TOL)


@pytest.mark.skipif(not blas.HAVE_OPENBLAS, reason="numpy here has no OpenBLAS")
def test_openblas_threads_are_restored_after_a_kernel():
    _, set_threads, get_threads = blas._openblas
    set_threads(2)
    with blas.single_threaded(True):
        assert get_threads() == 1
    assert get_threads() == 2


@numba.extending.intrinsic
def _meminfo_address(typingctx, array):
    """The address of an array's reference-counted owner (0: none)."""
    def codegen(context, builder, signature, args):
        meminfo = context.make_array(array)(context, builder, value=args[0]).meminfo
        return builder.ptrtoint(meminfo, numba.core.cgutils.intp_t)
    return numba.types.intp(array), codegen


@numba.njit
def _owners_and_write(a, w, f):
    b = cpu._borrowed(a)
    b[1:][0] = 5.0  # a view of a borrowed view writes into the caller's array
    q, p = cpu._borrowed(w), cpu._borrowed(f)
    return (_meminfo_address(a), _meminfo_address(b), _meminfo_address(b[1:]), _meminfo_address(q.panels),
            _meminfo_address(q.scale), _meminfo_address(p.matrix), _meminfo_address(p.panels), q.input_scale, q.rows)


def test_borrowed_views_share_memory_without_a_reference_count():
    from edgelstm.kernels.quantized import QuantizedMatrix
    a = np.zeros(4, np.float32)
    w = QuantizedMatrix.from_values(np.ones((3, 5), np.int8), np.full(5, 0.5, np.float32), 0.25)
    f = PackedMatrix.from_matrix(np.ones((3, 5), np.float32))
    owner, *borrowed, input_scale, rows = _owners_and_write(a, w, f)
    assert owner != 0 and borrowed == [0] * 6
    assert (input_scale, rows) == (0.25, 3)
    np.testing.assert_array_equal(a, [0, 5, 0, 0])


@examples
@given(seed=st.integers(0, 2**31), rows=st.integers(1, 12), width=st.integers(1, 20),
       out_width=st.integers(1, 9), act=st.sampled_from(CODES))
def test_dense_and_activation_match_reference(seed, rows, width, out_width, act):
    rng = np.random.default_rng(seed)
    x, kernel, bias = arrays(rng, rows, width, scale=2.0), arrays(rng, width, out_width), arrays(rng, out_width)
    expected, got = np.empty((rows, out_width), np.float32), np.empty((rows, out_width), np.float32)
    reference.dense(x, kernel, bias, act, expected)
    cpu.dense(x, kernel, bias, act, got)
    np.testing.assert_allclose(got, expected, **TOL)
    expected, got = np.empty_like(x), np.empty_like(x)
    reference.activation(x, act, expected)
    cpu.activation(x, act, got)
    np.testing.assert_allclose(got, expected, **TOL)


@examples
@given(seed=st.integers(0, 2**31), batch=st.integers(1, 3), steps=st.integers(1, 9), size=st.integers(1, 4),
       strides=st.integers(1, 3), dilation=st.integers(1, 3), padding=st.sampled_from(["valid", "same", "causal"]))
def test_conv1d_matches_reference(seed, batch, steps, size, strides, dilation, padding):
    from edgelstm.ir import conv_padding

    rng = np.random.default_rng(seed)
    x, kernel, bias = arrays(rng, batch, steps, 3), arrays(rng, size, 3, 4), arrays(rng, 4)
    pad, length = conv_padding(steps, size, strides, dilation, padding)
    assume(length >= 1)
    expected, got = np.empty((batch, length, 4), np.float32), np.empty((batch, length, 4), np.float32)
    reference.conv1d(x, kernel, bias, strides, dilation, pad, activations.CODES["relu"], expected)
    cpu.conv1d(x, kernel, bias, strides, dilation, pad, activations.CODES["relu"], got)
    np.testing.assert_allclose(got, expected, **TOL)


@examples
@given(seed=st.integers(0, 2**31), steps=st.integers(1, 9), size=st.integers(1, 4), strides=st.integers(1, 3),
       padding=st.sampled_from(["valid", "same"]), is_max=st.booleans())
def test_pooling_matches_reference(seed, steps, size, strides, padding, is_max):
    from edgelstm.ir import conv_padding

    rng = np.random.default_rng(seed)
    x = arrays(rng, 2, steps, 3)
    pad, length = conv_padding(steps, size, strides, 1, padding)
    assume(length >= 1)
    expected, got = np.empty((2, length, 3), np.float32), np.empty((2, length, 3), np.float32)
    reference.pool1d(x, is_max, size, strides, pad, expected)
    cpu.pool1d(x, is_max, size, strides, pad, got)
    np.testing.assert_allclose(got, expected, **TOL)
    mask = rng.random((2, steps)) > 0.3
    mask[:, 0] = True
    expected, got = np.empty((2, 3), np.float32), np.empty((2, 3), np.float32)
    reference.global_pool1d(x, mask, is_max, expected)
    cpu.global_pool1d(x, mask, is_max, got)
    np.testing.assert_allclose(got, expected, **TOL)


@examples
@given(seed=st.integers(0, 2**31), rows=st.integers(1, 9), width=st.integers(1, 9))
def test_normalisation_matches_reference(seed, rows, width):
    rng = np.random.default_rng(seed)
    x, a, b = arrays(rng, rows, width, scale=3.0), arrays(rng, width), arrays(rng, width)
    for name, args in (("batch_norm", (a, b)), ("layer_norm", (a, b, 1e-3))):
        expected, got = np.empty_like(x), np.empty_like(x)
        getattr(reference, name)(x, *args, expected)
        getattr(cpu, name)(x, *args, got)
        np.testing.assert_allclose(got, expected, **TOL)


def test_float32_tanh_and_sigmoid_are_exact_to_rounding_over_the_whole_range():
    """The kernels' rational tanh (and sigmoid through it) against float64 maths at every 61st float32."""
    positive = np.arange(0, np.float32(np.inf).view(np.int32) + 1, 61, dtype=np.int32).view(np.float32)
    x = np.concatenate([positive, -positive, [np.float32(np.inf), -np.float32(np.inf)]])
    exact_tanh = np.tanh(x.astype(np.float64))
    got = x.copy()
    cpu._activate(activations.TANH, got, 0, x.size)
    ulps = np.abs(got - exact_tanh) / np.spacing(np.abs(exact_tanh).astype(np.float32)).astype(np.float64)
    assert ulps.max() <= 6.0, f"tanh is {ulps.max():.1f} ulp off at x={x[np.argmax(ulps)]}"
    got = x.copy()
    cpu._activate(activations.SIGMOID, got, 0, x.size)
    with np.errstate(over="ignore"):
        exact_sigmoid = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    error = np.abs(got - exact_sigmoid)
    assert error.max() <= 2e-7, f"sigmoid is {error.max():.2g} off at x={x[np.argmax(error)]}"  # 1.7 ulp of 1.0
    nan = np.array([np.nan], np.float32)
    for code in (activations.TANH, activations.SIGMOID):
        cpu._activate(code, nan, 0, 1)
        assert np.isnan(nan[0])


def test_activations_are_stable_at_extremes():
    x = np.array([[-1e4, -80.0, -1e-3, 0.0, 1e-3, 80.0, 1e4]], np.float32)
    for code in GATE_CODES:
        expected, got = np.empty_like(x), np.empty_like(x)
        reference.activation(x, code, expected)
        cpu.activation(x, code, got)
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@examples
@given(seed=st.integers(0, 2**31), batch=st.integers(1, 3), steps=st.integers(1, 6), width=st.integers(1, 4),
       op=st.sampled_from([reference.MERGE_ADD, reference.MERGE_MULTIPLY, reference.MERGE_AVERAGE]),
       count=st.integers(2, 3))
def test_embedding_masking_merge_match_reference(seed, batch, steps, width, op, count):
    rng = np.random.default_rng(seed)
    ids, table = rng.integers(0, 5, (batch, steps)), arrays(rng, 5, width)
    expected, got = np.empty((batch, steps, width), np.float32), np.empty((batch, steps, width), np.float32)
    reference.embedding(ids, table, expected)
    cpu.embedding(ids, table, got)
    np.testing.assert_array_equal(got, expected)

    x = np.where(rng.random((batch, steps, 1)) > 0.5, arrays(rng, batch, steps, width), np.float32(0.5))
    results = []
    for module in (reference, cpu):
        out, mask = np.empty_like(x), np.empty((batch, steps), bool)
        module.masking(x, np.float32(0.5), out, mask)
        results.append((out, mask))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])

    xs = tuple(arrays(rng, batch * steps * width) for _ in range(count))
    expected, got = np.empty_like(xs[0]), np.empty_like(xs[0])
    reference.merge(xs, op, expected)
    cpu.merge(xs, op, got)
    np.testing.assert_allclose(got, expected, **TOL)
