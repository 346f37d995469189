"""symopt workers: Ray execution of training runs that stream events back to the scheduler."""
