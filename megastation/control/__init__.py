"""The live control loop: gather readings, build the dispatch problem, solve, apply, record.

Talks to chargers and devices only through :mod:`megastation.core` interfaces; imports
``dispatch``, ``store``, ``core`` and ``forecasts``, never ``ocpp_central``."""
