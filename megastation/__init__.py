"""megastation: the controller of an RE100 EV charging station.

Pure core (dispatch, battery model, tariff) with I/O at the edges (OCPP sockets,
SQLite store, CLI, files).
"""

__version__ = "0.1.0"
