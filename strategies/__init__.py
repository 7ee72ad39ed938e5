"""Strategy plugins: one module per strategy; see ``strategies.base`` and ``strategies.registry``."""
