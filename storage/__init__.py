"""The job log, queue and outbox (SQLAlchemy), and spool paths."""
