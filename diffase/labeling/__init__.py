"""DFT labels for structures without data: GPAW single points -> density, site DOS, Bader charges, gap, E_F.

===================  ==========================================================================================
module               one job
===================  ==========================================================================================
``settings``         ``LabelSettings`` (defaults = shared/data/electronic), the k-point rule, supported elements
``gpaw_worker``      standalone script run by the interpreter that has GPAW (imports only gpaw, ase, numpy)
``gpaw_runner``      start the worker on one structure, turn its raw output into a label
``batch``            many structures: resumable, sharded (``--shard i/n``), logged, failures recorded
===================  ==========================================================================================

GPAW is optional and found at run time (``apt-get install gpaw gpaw-data`` on Debian/Ubuntu). The command line is
``diffase label STRUCTURES --out FOLDER``; labels use the format of :mod:`diffase.data.electronic.dataset`.
"""
