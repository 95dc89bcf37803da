"""Model modules: one folder per model (config.toml, features.py, model.py)."""
