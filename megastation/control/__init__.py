"""The live control loop: gather readings, build the dispatch problem, solve, apply, record.

One cycle (:meth:`controller.Controller.cycle`) runs the stages in order, each a module:
``gather`` -> ``problem`` -> ``solve`` -> ``setpoints`` -> ``apply`` -> ``record``.
Beside them: ``caps`` (each car's learned power limit and probes), ``balance`` (the
battery between plans), ``supervisor`` (restart with backoff), ``needs`` (what a car
still wants; cars still to come), ``demand`` (what is learned of them), ``pv`` (the
forecast on the plan grid), ``renewable`` (the battery's green share), ``flows`` (the
measured energy-flow record).

Talks to chargers and devices only through :mod:`megastation.core` interfaces; imports
``dispatch``, ``store``, ``core`` and ``forecasts``, never ``ocpp_central``; its SQL is
in :mod:`megastation.store`."""
