"""The domain core: clock, station config, tariff, renewable accounting, device and gateway
interfaces, schedules. Pure; imports nothing else of megastation and never ``ocpp_central``."""
