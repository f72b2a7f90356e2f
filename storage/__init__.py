"""The job log, queue and outbox (SQLAlchemy), and spool paths.

- :mod:`storage.joblog`: :class:`~storage.joblog.JobLog`, the facade every other package uses;
  each method is one transaction, safe from several processes and threads.
- :mod:`storage.spool`: :func:`~storage.spool.validate_uid` and :class:`~storage.spool.Spool`
  (atomic, fsynced files named by validated UIDs).
- :mod:`storage.states`: job / receipt / delivery states and the allowed job transitions.
- :mod:`storage.records`: the frozen dataclasses passed in and handed back (with ``to_json()``).
- Internals: :mod:`~storage.models` (tables), :mod:`~storage.database` (engine set-up),
  :mod:`~storage.migrations` (schema creation and upgrades on open, under a lock),
  :mod:`~storage.receipts`, :mod:`~storage.outbox`, :mod:`~storage.queries`,
  :mod:`~storage.retention`.

Tables: ``studies``, ``series`` (first and last receipt), ``instances`` (calling AE, peer host,
time, path, sha256, size), ``instance_events`` (conflicting re-sends), ``jobs`` (state, reason,
attempts, worker, lease_until, instances retention deleted), ``job_events`` (timestamped
transitions), ``stage_timings``, ``deliveries`` (destination, SOP UID, path, state, attempts,
last_error, next_attempt_at), ``workers`` (last seen) and ``spinenode_schema`` (the schema
version). Times are UTC. No patient name, ID or birth date is stored.
"""
