"""Device drivers: one package per protocol, each built on the driver API in gateway.driver."""
