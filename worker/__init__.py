"""symopt workers: Ray execution of training runs that stream events back to the scheduler.

`worker.run.run_training` is the task body; the scheduler (in `service/`) submits it with the
job's resources and consumes its events. Nothing here opens the database.
"""
