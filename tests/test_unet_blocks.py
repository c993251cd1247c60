"""The U-Net's pieces (image/blocks.py, image/attention.py) against central differences (float64).

Tolerance, as in test_conv.py: central differences with h = 1e-6 carry a truncation
error O(h^2) and a round-off of about ``eps S / h``, with ``S`` the summed magnitude of
the terms of ``f = sum(out * dout)``; entries below that floor are compared in absolute
terms.  A correct gradient then gives a relative error near 1e-8 and a wrong one O(1);
we accept below 1e-5.  Every function here is smooth (SiLU, GroupNorm with eps > 0, the
softmax), so the strategies need avoid no kinks; inputs are bounded (|x| <= 2) so that
no softmax saturates and no GroupNorm group is near-constant by construction.
"""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from numpy_diffusion.image import attention, blocks
from numpy_diffusion.nn.layers import sigmoid, silu_forward
from strategies import arrays, seeds
from test_conv import jvp_error

TOL = 1e-5
# The residual block: a per-channel shift before a one-channel GroupNorm group (the time shift, conv1's
# bias) has a gradient of exactly zero, and central differences of it are round-off amplified by the
# group's mean over its spread (up to ~10 on the drawn blocks), which reached 1.2e-5 against the floor;
# a wrong rule reads O(1).
BLOCK_TOL = 1e-4
group_counts, per_group, sides = st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)


@st.composite
def grouped_images(draw, min_side=1, groups=None):
    """``(x, G)``: a float64 image batch (N, H, W, G c) and its group count ``G``."""
    G = draw(group_counts) if groups is None else groups
    n, h, w = draw(st.integers(1, 2)), draw(st.integers(min_side, 3)), draw(st.integers(min_side, 3))
    return draw(arrays((n, h, w, G * draw(per_group)))), G


def check_params(forward, dout, params, grads, tol=TOL):
    """Every parameter's gradient entry by entry; ``forward()`` reads ``params`` (perturbed in place)."""
    assert set(grads) == set(params)
    for name, p in params.items():
        assert grads[name].shape == p.shape, name
        assert jvp_error(lambda _: forward(), p, dout, grads[name]) < tol, name


def test_silu_is_x_sigmoid_x_and_stable():
    x = np.array([-1e4, -30.0, -1.0, 0.0, 2.0, 1e4])
    np.testing.assert_allclose(silu_forward(x)[0], x * sigmoid(x), rtol=1e-15)
    assert silu_forward(x)[0][0] == 0 and silu_forward(x)[0][-1] == 1e4


@given(xg=grouped_images(), data=st.data())
def test_group_norm_backward(xg, data):
    x, G = xg
    C = x.shape[3]
    g, b, dout = data.draw(arrays((C,))), data.draw(arrays((C,))), data.draw(arrays(x.shape))
    out, cache = blocks.group_norm_forward(x, g, b, groups=G)
    grads = blocks.group_norm_backward(dout, cache)
    for arg, grad in zip((x, g, b), grads):
        assert grad.shape == arg.shape
        assert jvp_error(lambda _: blocks.group_norm_forward(x, g, b, groups=G)[0], arg, dout, grad) < TOL


@given(xg=grouped_images(min_side=2), seed=seeds)
def test_group_norm_normalizes_each_group(xg, seed):
    """Before the affine map (g = 1, b = 0) each example's group has mean 0 and variance 1
    (exactly, up to round-off, at eps = 0; H, W >= 2 so no group is a single entry)."""
    x, G = xg
    N, C = x.shape[0], x.shape[3]
    out = blocks.group_norm_forward(x, np.ones(C), np.zeros(C), groups=G, eps=0.0)[0]
    per_group = out.reshape(N, -1, G, C // G).transpose(0, 2, 1, 3).reshape(N, G, -1)
    np.testing.assert_allclose(per_group.mean(axis=2), 0, atol=1e-12)
    np.testing.assert_allclose(per_group.var(axis=2), 1, rtol=1e-12)


@given(xg=grouped_images(min_side=2), seed=seeds)
def test_group_norm_ignores_shift_and_scale_of_a_group(xg, seed):
    """``GN(a x + c) = GN(x)`` for a shift ``c`` and a scale ``a > 0`` per example and group
    (at eps = 0; eps > 0 breaks the scale invariance by ``eps / var``)."""
    x, G = xg
    N, C, rng = x.shape[0], x.shape[3], np.random.default_rng(seed)
    a = np.repeat(rng.uniform(0.1, 10, (N, 1, 1, G)), C // G, axis=3)   # one a per example and group
    c = np.repeat(rng.uniform(-5, 5, (N, 1, 1, G)), C // G, axis=3)
    g, b = rng.normal(size=C), rng.normal(size=C)
    np.testing.assert_allclose(blocks.group_norm_forward(a * x + c, g, b, groups=G, eps=0.0)[0],
                               blocks.group_norm_forward(x, g, b, groups=G, eps=0.0)[0], rtol=1e-9, atol=1e-9)


def test_group_norm_groups_are_separate():
    """Two groups: changing the second group's channels leaves the first group's output alone."""
    rng = np.random.default_rng(0)
    x, g, b = rng.normal(size=(2, 3, 3, 4)), np.ones(4), np.zeros(4)
    moved = x.copy()
    moved[..., 2:] = 5 * moved[..., 2:] ** 3
    out, out_moved = (blocks.group_norm_forward(a, g, b, groups=2)[0] for a in (x, moved))
    np.testing.assert_array_equal(out[..., :2], out_moved[..., :2])
    assert not np.allclose(out[..., 2:], out_moved[..., 2:])
    with pytest.raises(ValueError, match="C divisible by groups"):
        blocks.group_norm_forward(x, g, b, groups=3)


def test_timestep_embedding_is_the_formula():
    t, dim = np.array([1, 7, 1000]), 7                                  # odd: a zero column last
    e = blocks.timestep_embedding(t, dim)
    assert e.shape == (3, 7) and e.dtype == np.float64
    for n in range(3):
        for i in range(3):
            w = 1 / 10000 ** (2 * i / dim)
            assert e[n, i] == pytest.approx(math.sin(t[n] * w), abs=1e-13)
            assert e[n, 3 + i] == pytest.approx(math.cos(t[n] * w), abs=1e-13)
    assert not e[:, 6].any()


def test_timestep_embedding_tells_every_step_apart():
    e = blocks.timestep_embedding(np.arange(1, 1001), 16)
    sq = (e * e).sum(1)
    gaps = sq[:, None] + sq[None] - 2 * e @ e.T + np.eye(1000) * 9      # squared distances, off the diagonal
    assert gaps.min() > 0.5                     # when written: the nearest two steps 1.01 apart (squared 1.03)
    assert np.linalg.norm(e[1] - e[0]) < np.linalg.norm(e[500] - e[0])   # neighbours are close


def attention_loop(x, Wqkv, bqkv, Wo, bo):
    """Attention written pixel by pixel: ``out_i = (sum_j softmax_j(q_i . k_j / sqrt(d)) v_j) Wo + bo``."""
    N, H, W, C = x.shape
    d = Wo.shape[0]
    out = np.empty((N, H * W, C))
    for n in range(N):
        rows = x[n].reshape(H * W, C)
        q, k, v = (rows @ Wqkv[:, m * d:(m + 1) * d] + bqkv[m * d:(m + 1) * d] for m in range(3))
        for i in range(H * W):
            s = np.array([q[i] @ k[j] / math.sqrt(d) for j in range(H * W)])
            a = np.exp(s) / np.exp(s).sum()
            out[n, i] = sum(a[j] * v[j] for j in range(H * W)) @ Wo + bo
    return out.reshape(x.shape)


@st.composite
def attention_inputs(draw):
    x = draw(arrays((draw(st.integers(1, 2)), draw(sides), draw(sides), draw(st.integers(1, 3))), scale=1.0))
    C, d = x.shape[3], draw(st.integers(1, 3))
    return (x, draw(arrays((C, 3 * d), scale=1.0)), draw(arrays((3 * d,), scale=1.0)),
            draw(arrays((d, C), scale=1.0)), draw(arrays((C,), scale=1.0)))


@given(args=attention_inputs())
def test_attention_is_the_loop(args):
    np.testing.assert_allclose(attention.attention_forward(*args)[0], attention_loop(*args), rtol=1e-12, atol=1e-12)


@given(args=attention_inputs(), data=st.data())
def test_attention_backward(args, data):
    out, cache = attention.attention_forward(*args)
    dout = data.draw(arrays(out.shape))
    grads = attention.attention_backward(dout, cache)
    for arg, grad in zip(args, grads):
        assert grad.shape == arg.shape
        assert jvp_error(lambda _: attention.attention_forward(*args)[0], arg, dout, grad) < TOL
    d = args[3].shape[0]
    dbqkv, dWo, dbo = grads[2:]
    np.testing.assert_allclose(dbqkv[d:2 * d], 0, atol=1e-12)         # the softmax removes a key bias
    np.testing.assert_allclose(dbqkv[2 * d:], args[3] @ dbo, rtol=1e-10, atol=1e-12)   # a value bias is b_v Wo


def test_attention_does_not_overflow():
    rng = np.random.default_rng(0)
    x, Wqkv = 100 * rng.normal(size=(1, 2, 2, 3)), 10 * rng.normal(size=(3, 6))
    out = attention.attention_forward(x, Wqkv, np.zeros(6), np.ones((2, 3)), np.zeros(3))[0]
    assert np.isfinite(out).all()


@st.composite
def block_inputs(draw, skip=None):
    """``(x, emb, params, G)`` for one residual block, every parameter random; a skip
    convolution where the widths differ, or where ``skip`` is True (``skip=False``: equal widths, none)."""
    # at least 3 entries per group: GroupNorm of 2 entries is +-1 whatever they are (a degenerate point)
    x, G = draw(grouped_images().filter(lambda xg: xg[0].shape[1] * xg[0].shape[2] * xg[0].shape[3] >= 3 * xg[1]))
    C, E, k = x.shape[3], draw(st.integers(1, 3)), draw(st.sampled_from([1, 3]))
    O = C if skip is False else G * draw(per_group)
    shapes = {"norm1.g": (C,), "norm1.b": (C,), "conv1.W": (k, k, C, O), "conv1.b": (O,), "emb.W": (E, O),
              "emb.b": (O,), "norm2.g": (O,), "norm2.b": (O,), "conv2.W": (k, k, O, O), "conv2.b": (O,)}
    if C != O or skip:
        shapes.update({"skip.W": (C, O), "skip.b": (O,)})
    # weights and gains at least 0.1 from zero: near zero they leave GN2 a group of nearly equal values,
    # whose normalization amplifies round-off past what central differences resolve (an ill-conditioned
    # point, like a kink); biases may be anything
    params = {f"rb.{name}": draw(arrays(shape, scale=1.0, away_from_zero=0.1 if name[-2:] in (".W", ".g") else 0.0))
              for name, shape in shapes.items()}
    return x, draw(arrays((x.shape[0], E))), params, G


@given(inputs=block_inputs(), data=st.data())
def test_res_block_backward(inputs, data):
    x, emb, params, G = inputs
    forward = lambda: blocks.res_block_forward(x, emb, params, "rb.", groups=G)[0]
    out = forward()
    dout = data.draw(arrays(out.shape))
    dx, demb, grads = blocks.res_block_backward(dout, blocks.res_block_forward(x, emb, params, "rb.", groups=G)[1])
    assert jvp_error(lambda _: forward(), x, dout, dx) < BLOCK_TOL
    assert jvp_error(lambda _: forward(), emb, dout, demb) < BLOCK_TOL
    check_params(forward, dout, params, grads, tol=BLOCK_TOL)


@given(inputs=block_inputs(skip=False))
def test_res_block_starts_as_the_identity(inputs):
    """With ``conv2`` at zero (its initialization) and no skip convolution, ``out = x``."""
    x, emb, params, G = inputs
    params["rb.conv2.W"][...], params["rb.conv2.b"][...] = 0, 0
    np.testing.assert_array_equal(blocks.res_block_forward(x, emb, params, "rb.", groups=G)[0], x)


def test_res_block_refuses_widths_without_a_skip():
    params = {"rb.conv1.W": np.zeros((3, 3, 2, 4))}
    with pytest.raises(ValueError, match="rb.skip.W where C differs from 4"):
        blocks.res_block_forward(np.zeros((1, 2, 2, 2)), np.zeros((1, 3)), params, "rb.", groups=1)


@given(xg=grouped_images(), o=st.integers(1, 3), data=st.data())
def test_norm_act_conv_backward(xg, o, data):
    x, G = xg
    C = x.shape[3]
    params = {"n.g": data.draw(arrays((C,))), "n.b": data.draw(arrays((C,))),
              "c.W": data.draw(arrays((3, 3, C, o))), "c.b": data.draw(arrays((o,)))}
    forward = lambda: blocks.norm_act_conv_forward(x, params, "n", "c", groups=G)[0]
    dout = data.draw(arrays(forward().shape))
    dx, grads = blocks.norm_act_conv_backward(dout, blocks.norm_act_conv_forward(x, params, "n", "c", groups=G)[1])
    assert jvp_error(lambda _: forward(), x, dout, dx) < TOL
    check_params(forward, dout, params, grads)


@given(x=arrays((2, 2, 3, 2)), o=st.integers(1, 3), data=st.data())
def test_upsample_conv_backward(x, o, data):
    W, b = data.draw(arrays((3, 3, 2, o))), data.draw(arrays((o,)))
    out, cache = blocks.upsample_conv_forward(x, W, b)
    assert out.shape == (2, 4, 6, o)
    dout = data.draw(arrays(out.shape))
    for arg, grad in zip((x, W, b), blocks.upsample_conv_backward(dout, cache)):
        assert jvp_error(lambda _: blocks.upsample_conv_forward(x, W, b)[0], arg, dout, grad) < TOL


@given(xg=grouped_images(), data=st.data())
def test_attention_block_backward(xg, data):
    x, G = xg
    C = x.shape[3]
    shapes = {"norm.g": (C,), "norm.b": (C,), "qkv.W": (C, 3 * C), "qkv.b": (3 * C,), "out.W": (C, C), "out.b": (C,)}
    params = {f"a.{k}": data.draw(arrays(s, scale=1.0)) for k, s in shapes.items()}
    forward = lambda: attention.attention_block_forward(x, params, "a.", groups=G)[0]
    dout = data.draw(arrays(x.shape))
    dx, grads = attention.attention_block_backward(dout, attention.attention_block_forward(x, params, "a.",
                                                                                           groups=G)[1])
    assert jvp_error(lambda _: forward(), x, dout, dx) < TOL
    check_params(forward, dout, params, grads)
    params["a.out.W"][...], params["a.out.b"][...] = 0, 0              # its initialization: the identity
    np.testing.assert_array_equal(forward(), x)
