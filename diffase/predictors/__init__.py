"""Predictors of DFT labels from structure: per-site DOS and Bader charges, the valence density, with their baselines.

==================  =====================================================================================
module              one job
==================  =====================================================================================
``site_net``        ``SiteLabelNet``: invariant message passing, atoms -> site DOS (512 points) + Bader charge
``baseline``        ``ElementMeans``: per-element mean site DOS and mean Bader charge (the baseline and the
                    network's starting point)
``metrics``         held-out errors per element: site-DOS MAE, 1-D Wasserstein distance, Bader MAE
``split``           the held-out-by-material split of a label folder
``model``           ``SiteLabelPredictor``: network + baseline + checkpoint; structure -> predicted label
``probe_graph``     grid points in the labels' convention; periodic probe -> atom pairs within a cutoff
``density_net``     ``ProbeDensityNet``: fitted superposition of atomic Gaussians + atom -> probe correction
``density_model``   ``DensityPredictor``: density network + checkpoint; structure -> 32^3 grid or any points
``predict_labels``  streamed, resumable writing of predicted labels for a structure table
==================  =====================================================================================

Units: eV (energies relative to E_F), states/eV (DOS), e (charges, positive = electron loss), e/Angstrom^3
(densities), Angstrom. Training lives in :mod:`diffase.train.site_trainer` and :mod:`diffase.train.density_trainer`.
"""
