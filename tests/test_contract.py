"""The one contract every differentiable piece keeps, checked on all of them at once.

``thing_forward(inputs...) -> (out, cache)`` with a named cache (a ``NamedTuple``);
``thing_backward(upstream gradients..., cache)``, whose other parameters, if any, are
keyword-only flags, returns the gradients of the forward's differentiable inputs in
their order: one array per array input, shaped like it, and a dict for a dict input
(the parameters of a network, the schedule's tables) with that input's keys.
"""
import inspect

import numpy as np
import pytest

from numpy_diffusion.binomial import kernel as binomial_kernel
from numpy_diffusion.binomial.model import BinomialDiffusion
from numpy_diffusion.gaussian import bound, forward, reverse, schedule, tables
from numpy_diffusion.image import attention, blocks, unet, unet_config
from numpy_diffusion.image import conv, layers as image_layers
from numpy_diffusion.image.network import ImageNetConfig, ImageNetwork, image_net_backward, image_net_forward
from numpy_diffusion.nn import layers, mlp, network, readout

rng = np.random.default_rng(0)
x, W, b = rng.normal(size=(6, 3)), rng.normal(size=(3, 4)), rng.normal(size=4)
T, t = 5, np.array([2, 3, 5, 2, 4, 5])
beta = schedule.baseline_beta(schedule.ScheduleConfig(T=T))
tab, _ = tables.tables_forward(beta)
net_cfg = network.NetConfig(D=3, T=T, hidden=(4,), n_bumps=2, fourier=2)
net_params = network.init_network(net_cfg, rng)
mlp_params = mlp.init_mlp((3, 4, 2), rng)
W_read, b_read, G = rng.normal(size=(3, 2, 4)), np.zeros((2, 4)), readout.bump_basis(T, 2)
W_step, b_step = rng.normal(size=(3, T, 4)), np.zeros((T, 4))
z = rng.normal(size=(6, 6))
w = np.zeros(3)
bits = (rng.random((6, 3)) < 0.5).astype(float)
binomial = BinomialDiffusion(D=3, T=T, pi=0.3, hidden=(4,), basis="bump", n_bumps=2)
binomial_params = binomial.init_params(rng)
img, emb, g4 = rng.normal(size=(2, 4, 4, 4)), rng.normal(size=(2, 3)), rng.normal(size=4)
nac_params = {"n.g": g4, "n.b": g4, "c.W": rng.normal(size=(3, 3, 4, 2)), "c.b": np.zeros(2)}
block_params = {"r.norm1.g": g4, "r.norm1.b": g4, "r.conv1.W": rng.normal(size=(3, 3, 4, 6)), "r.conv1.b": np.zeros(6),
                "r.emb.W": rng.normal(size=(3, 6)), "r.emb.b": np.zeros(6), "r.norm2.g": np.ones(6),
                "r.norm2.b": np.zeros(6), "r.conv2.W": rng.normal(size=(3, 3, 6, 6)), "r.conv2.b": np.zeros(6),
                "r.skip.W": rng.normal(size=(4, 6)), "r.skip.b": np.zeros(6)}
attn_args = (rng.normal(size=(4, 6)), np.zeros(6), rng.normal(size=(2, 4)), np.zeros(4))
unet_cfg = unet_config.UNetConfig(size=4, T=T, widths=(2, 4), emb_dim=3, groups=2)
unet_params, unet_xt = unet_config.init_unet(unet_cfg, rng), rng.normal(size=(6, 16))
attn_params = {"a.norm.g": g4, "a.norm.b": g4, "a.qkv.W": rng.normal(size=(4, 12)), "a.qkv.b": np.zeros(12),
               "a.out.W": rng.normal(size=(4, 4)), "a.out.b": g4}
binomial_tables = binomial.tables(np)
img3 = rng.normal(size=(2, 4, 4, 3))                                # (N, H, W, C)
W_conv, W_ms, b2 = rng.normal(size=(3, 3, 3, 2)), rng.normal(size=(2, 3, 3, 3, 2)), rng.normal(size=2)
image_cfg = ImageNetConfig(size=4, channels=1, T=T, n_scales=2, n_hidden_conv=2, n_layers_conv=1, n_hidden_pixel=3,
                           n_temporal_basis=2, n_layers_dense=1, n_hidden_dense=3, n_dense_channels=1)
image_params = ImageNetwork(image_cfg).init_params(rng)
x_image, t_image = rng.normal(size=(2, 16)), np.array([2, 5])
dense_params = {k: v for k, v in image_params.items() if k.startswith("dense.")}

# name -> (forward call, backward, the forward's differentiable inputs in order)
PAIRS = {
    "linear": (lambda: layers.linear_forward(x, W, b), layers.linear_backward, (x, W, b)),
    **{name: (lambda f=f: f(x), bwd, (x,)) for name, (f, bwd) in layers.ACTIVATIONS.items()},
    "fourier": (lambda: layers.fourier_forward(x, W), layers.fourier_backward, (x, W)),
    "rbf": (lambda: layers.rbf_forward(x, W.T, np.zeros(4)), layers.rbf_backward, (x, W.T, np.zeros(4))),
    "readout": (lambda: readout.readout_forward(x, t, W_read, b_read, G), readout.readout_backward,
                (x, W_read, b_read)),
    "step_readout": (lambda: readout.step_readout_forward(x, t, W_step, b_step), readout.step_readout_backward,
                     (x, W_step, b_step)),
    "mlp": (lambda: mlp.mlp_forward(x, mlp_params), mlp.mlp_backward, (x, mlp_params)),
    "network": (lambda: network.network_forward(x, t, net_params, net_cfg, network.temporal_basis(net_cfg)),
                network.network_backward, (x, net_params)),
    "tables": (lambda: tables.tables_forward(beta), tables.tables_backward, (beta,)),
    "schedule": (lambda: schedule.schedule_forward(schedule.ScheduleConfig(T=T, learn=True, n_bumps=3), w),
                 schedule.schedule_backward, (w,)),
    "schedule_decrements": (
        lambda: schedule.schedule_forward(schedule.ScheduleConfig(T=T, learn=True, learned_form="decrements"),
                                          np.zeros(T - 1)),
        schedule.schedule_backward, (np.zeros(T - 1),)),
    "q_sample": (lambda: forward.q_sample_forward(x, t, x, tab), forward.q_sample_backward, (tab,)),
    "q_posterior": (lambda: forward.q_posterior_forward(x, x, t, tab), forward.q_posterior_backward, (x, tab)),
    "p_mean_logvar": (lambda: reverse.p_mean_logvar_forward(z, x, t, tab, param="paper"),
                      reverse.p_mean_logvar_backward, (z, x, tab)),
    "kl": (lambda: bound.kl_forward(x, x[:, :1], x, x), bound.kl_backward, (x, x[:, :1], x, x)),
    "bound": (lambda: bound.bound_forward(z, x, x, t, np.ones(6), tab, param="bounded"), bound.bound_backward,
              (z, x, tab)),
    "binomial_kl": (lambda: binomial_kernel.kl_forward(x, x), binomial_kernel.kl_backward, (x, x)),
    "binomial_bound": (lambda: binomial_kernel.bound_forward(x, bits, bits, t, np.ones(6), binomial_tables),
                       binomial_kernel.bound_backward, (x,)),
    "group_norm": (lambda: blocks.group_norm_forward(img, g4, g4, groups=2), blocks.group_norm_backward,
                   (img, g4, g4)),
    "norm_act_conv": (lambda: blocks.norm_act_conv_forward(img, nac_params, "n", "c", groups=2),
                      blocks.norm_act_conv_backward, (img, nac_params)),
    "res_block": (lambda: blocks.res_block_forward(img, emb, block_params, "r.", groups=2), blocks.res_block_backward,
                  (img, emb, block_params)),
    "upsample_conv": (lambda: blocks.upsample_conv_forward(img, nac_params["c.W"], np.zeros(2)),
                      blocks.upsample_conv_backward, (img, nac_params["c.W"], np.zeros(2))),
    "attention": (lambda: attention.attention_forward(img, *attn_args), attention.attention_backward,
                  (img, *attn_args)),
    "attention_block": (lambda: attention.attention_block_forward(img, attn_params, "a.", groups=2),
                        attention.attention_block_backward, (img, attn_params)),
    "unet": (lambda: unet.unet_forward(unet_xt, t, unet_params, unet_cfg), unet.unet_backward,
             (unet_xt, unet_params)),
    "binomial_p_logit": (lambda: binomial.p_logit_forward(bits, t, binomial_params), binomial.p_logit_backward,
                         (binomial_params,)),
    # the image network's pieces (App. D.2.1)
    "conv_naive": (lambda: conv.conv_forward_naive(img3, W_conv, b2), conv.conv_backward_naive, (img3, W_conv, b2)),
    "conv": (lambda: conv.conv_forward(img3, W_conv, b2), conv.conv_backward, (img3, W_conv, b2)),
    "mean_pool": (lambda: conv.mean_pool_forward(img3), conv.mean_pool_backward, (img3,)),
    "upsample": (lambda: conv.upsample_forward(img3), conv.upsample_backward, (img3,)),
    "multiscale": (lambda: image_layers.multiscale_forward(img3, W_ms, b2), image_layers.multiscale_backward,
                   (img3, W_ms, b2)),
    "pointwise": (lambda: image_layers.pointwise_forward(img3, W[:, :2], b2), image_layers.pointwise_backward,
                  (img3, W[:, :2], b2)),
    "pixel_readout": (lambda: image_layers.pixel_readout_forward(img3[..., :2], t[:2], G),
                      image_layers.pixel_readout_backward, (img3[..., :2],)),
    "dense_pathway": (lambda: mlp.mlp_forward(x_image, dense_params, activation="tanh", activate_last=True,
                                              prefix="dense."), mlp.mlp_backward, (x_image, dense_params)),
    "image_network": (lambda: image_net_forward(x_image, t_image, image_params, image_cfg,
                                                readout.bump_basis(T, 2)), image_net_backward, (x_image, image_params)),
}


def ones_like_output(out):
    """An upstream gradient for each output of a forward (one, or a tuple of them)."""
    if isinstance(out, dict):                         # the schedule's tables: the differentiable ones
        return [{k: np.ones_like(v) for k, v in out.items() if k in tables.DIFFERENTIABLE}]
    outs = out if isinstance(out, tuple) else (out,)
    return [np.ones_like(np.asarray(o, dtype=float)) for o in outs]


def assert_matches(grad, inp, what):
    if isinstance(inp, dict):
        assert isinstance(grad, dict) and set(grad) <= set(inp), f"{what}: a dict keyed like its input"
        for k, g in grad.items():
            assert np.shape(g) == np.shape(inp[k]), f"{what}[{k!r}]"
    else:
        assert np.shape(grad) == np.shape(inp), f"{what}: {np.shape(grad)} vs the input's {np.shape(inp)}"


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_every_pair_keeps_the_contract(name):
    forward_call, backward, inputs = PAIRS[name]
    out, cache = forward_call()
    assert isinstance(cache, tuple) and hasattr(cache, "_fields"), f"{name}: the cache must be a NamedTuple"
    upstream = ones_like_output(out)
    params = list(inspect.signature(backward).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert [p.name for p in positional][-1] == "cache" and len(positional) == len(upstream) + 1, name
    assert all(p.kind == p.KEYWORD_ONLY for p in params[len(positional):]), f"{name}: flags keyword-only"
    grads = backward(*upstream, cache)
    grads = grads if len(inputs) > 1 else (grads,)
    assert isinstance(grads, tuple) and len(grads) == len(inputs), f"{name}: one gradient per input"
    for i, (g, inp) in enumerate(zip(grads, inputs)):
        assert_matches(g, inp, f"{name}, input {i}")
