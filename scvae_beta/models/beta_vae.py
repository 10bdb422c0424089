"""beta-VAE on raw counts (Higgins et al. 2017) with a negative-binomial decoder."""

from __future__ import annotations

from scvae_beta.models.base import CountVAE


class BetaVAE(CountVAE):
    """beta-VAE whose KL term is weighted by ``beta`` through ``poutine.scale``.

    Generative story, for cell ``n`` with observed library size ``l_n`` and batch ``s_n``::

        z_n      ~ Normal(0, I_D)                                   (prior, D = n_latent)
        rho_n    = softmax(f_dec(z_n, onehot(s_n)))                 (gene proportions, sum 1)
        mu_ng    = l_n * rho_ng                                     (NB mean)
        x_ng     ~ NB(mu_ng, theta_g)      or theta_{s_n g} with dispersion="gene-batch"
                   (ZINB adds dropout sigmoid(h_ng); Poisson drops theta)

    Guide: ``q(z_n | x_n) = Normal(mu_enc(log1p x_n), diag sigma_enc(log1p x_n)^2)``.

    Objective per cell (what :class:`~scvae_beta.models.MeanFieldELBO` minimises)::

        -E_q[log p(x_n | z_n)] + beta * KL(q(z_n | x_n) || p(z_n))

    with the KL in closed form. ``kl_weight`` (beta times an annealing factor) scales the
    latent site in both model and guide; the ``cells`` plate scales by ``n_cells / B``.
    """
