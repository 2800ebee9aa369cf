"""Infrastructure: the SQLAlchemy mapping, dialect profiles, repositories and the queue."""
