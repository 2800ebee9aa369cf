"""Infrastructure: the SQLAlchemy mapping, dialects, engines, repositories, units of work and
the transaction runner. It knows the domain and nothing above it."""
