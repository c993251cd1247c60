"""numpy_diffusion: the reference NumPy implementation of Sohl-Dickstein et al. (2015),
*Deep Unsupervised Learning using Nonequilibrium Thermodynamics* (arXiv:1503.03585).

Every forward pass has a hand-written backward pass, checked by finite differences.
"""
__version__ = "0.1.0"
