"""The alerts database: typed models, engines, migrations and the repository.

This module stays import-light (no SQLAlchemy) so command-line help is fast.
"""

#: The database used when neither ``--db`` nor ``FRAUD_DB_URL`` is given.
DEFAULT_DB_URL = "sqlite:///fraud.db"
