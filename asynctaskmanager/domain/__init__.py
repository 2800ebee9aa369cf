"""The domain: entities, enums, rules and repository interfaces. No SQLAlchemy here."""
