"""The console names the user error of every failed job: Snakemake prints a failed job's log path
only, while the project's commands write their one `error: ...` line into that log. When the run
stops on an error, the last `error: ` lines of each failed job's log are printed with the log's
path (pipeline.job_errors)."""

import pipeline.job_errors


onstart:
    pipeline.job_errors.started()


onerror:
    pipeline.job_errors.report(workflow)
