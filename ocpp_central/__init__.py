"""OCPP-J central system: WebSocket server, OCPP 1.6 and 2.0.1 handlers, charging profiles."""
