"""beta-TCVAE on raw counts (Chen et al. 2018): the KL split into MI, TC and dimension-wise KL."""

from __future__ import annotations

from scvae_beta.models.base import CountVAE


class BetaTCVAE(CountVAE):
    """beta-TCVAE: the same generative story and guide as :class:`~scvae_beta.models.BetaVAE`.

    Generative story, for cell ``n`` with observed library size ``l_n`` and batch ``s_n``::

        z_n   ~ Normal(0, I_D)
        rho_n = softmax(f_dec(z_n, onehot(s_n)))
        x_ng  ~ NB(l_n * rho_ng, theta_g)

    Guide: ``q(z_n | x_n) = Normal(mu_enc(log1p x_n), diag sigma_enc(log1p x_n)^2)``.

    Only the objective differs. Averaged over the cells, the KL to the prior splits into
    index-code mutual information, total correlation of the aggregate posterior and the
    dimension-wise KL; the loss per cell is::

        -E_q[log p(x_n | z_n)] + alpha * MI + beta * TC + gamma * dw_KL

    with the three terms estimated on each minibatch by
    :func:`scvae_beta.objectives.kl_decomposition` (MSS or MWS). The latent site runs with
    weight 1 and the penalty is added once, in :class:`~scvae_beta.models.Objective`. With
    ``alpha = beta = gamma = 1`` the loss equals the plain VAE loss in expectation.
    """
