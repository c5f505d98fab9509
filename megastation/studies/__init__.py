"""Planning studies: sweep station sizes, policies and seeds with the real controller in the loop.

:mod:`~megastation.studies.spec` defines a study (TOML or flags) and its cells,
:mod:`~megastation.studies.cell` runs one cell (a scaled station simulated over the period),
:mod:`~megastation.studies.economics` annualises costs and marks the Pareto front,
:mod:`~megastation.studies.run` runs the pending cells on a local process pool or a Dask cluster.
"""
