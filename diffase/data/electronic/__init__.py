"""Electronic-structure fields: charge density grids, site DOS, Bader charges, and their on-disk label format.

========================  ====================================================================================
module                    one job
========================  ====================================================================================
``density``               read CHGCAR/AECCAR/cube, Fourier-regrid to N^3 keeping the electron count, write back
``normalise``             ``LogDensityScaler``: the learning normalisation of densities, with its exact inverse
``dos``                   site DOS vectors: spin sum, E_F = 0, semicore cut, Gaussian smearing onto a fixed window
``bader``                 vectorised grid-based Bader partition with periodic boundaries
``dataset``               one ``.npz`` per structure + ``index.csv``; ``ElectronicDataset`` joins structures and fields
``plots``                 PNG figures: density slices, isosurfaces, overlaid site DOS
========================  ====================================================================================

Units: Angstrom, eV, e/Angstrom^3 (densities), e (charges), states/eV (DOS). Labels are computed by
:mod:`diffase.labeling` (GPAW) or read from VASP outputs with these modules.
"""
