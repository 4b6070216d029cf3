"""Multi-step recipes built from generators, simulation and analysis (host-guided CSP: :mod:`.csp`).

Importing this package loads no model and imports no submodule.
"""
