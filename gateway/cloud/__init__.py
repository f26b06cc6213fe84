"""Cloud sync over MQTT: the link to the broker, the outbox drain, commands from the cloud, and the mirror."""
