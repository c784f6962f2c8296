"""The timed-jobs daemon (`python -m jobs`): APScheduler with its job store
in the main database. See jobs.scheduler."""
