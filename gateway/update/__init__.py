"""Updates with rollback: a signed bundle (`bundle`, `keys`, `build`) installed beside the running version
(`install`), switched to atomically (`layout`), the service restarted and watched (`service`), and switched back by
itself, the store restored from its backup (`backup`), when the new version is not healthy in time (`apply`).
Every step is written down first (`journal`), so that an update stopped anywhere, by `kill -9` or a power cut, is
finished or undone by the next start of the service (`recover`). docs/updates.md tells the whole story."""
