"""The domain builders: each takes the shared core pieces (`Core`) and settings, and returns its
domain's bundle. Only `app/` composes; domains never read `Settings`."""
