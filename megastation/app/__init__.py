"""The composition root: wires store, OCPP server, controller, devices and forecasts for
``serve`` and ``demo``. The only package that may import everything."""
