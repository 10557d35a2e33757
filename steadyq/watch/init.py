"""``steadyq watch init``: the founding incident's plan, filled in for one Cloud Run Job.

The incident team wrote seven success criteria and four risks by hand; this is the
same plan as TOML a person can edit, with the job and subscription in its comments
and in the command that runs it.
"""

from __future__ import annotations

import re

from steadyq.durations import format_duration, rfc3339
from steadyq.watch.sources.cloudrun import parse_source_url, parse_subscription_url

__all__ = ["plan_for"]

_TEMPLATE = """\
# Stability watch of Cloud Run Job {job!s} ({project}, {region}) after a fix.
# The incident's plan: seven success criteria, four risks, 24 hours with a
# checkpoint every 4 hours, judged against the 24 hours before the deployment.
#
# Run it live (each checkpoint imports what Cloud Run and Cloud Logging recorded):
#   steadyq watch plan.toml --url sqlite:///{slug}.db \\
#       --source {source}{subscription_arg} \\
#       --rejection-pattern 'Invalid request_id format'
# or judge exported logs (see docs/sources.md):
#   steadyq import gcloud executions.json logs.json --url sqlite:///{slug}.db \\
#       --rejection-pattern 'Invalid request_id format'
#   steadyq watch plan.toml --url sqlite:///{slug}.db --replay
#
# Every value below may be edited; `steadyq watch` checks the plan before it starts.

name = "{slug}-stability-24h"
start = {start}          # when the fix was deployed; the window starts here
window = "24h"
checkpoint_every = "4h"
max_runtime_s = "{timeout}"    # the job's task timeout: a run past it was killed
purpose = \"\"\"Confirm that messages with an invalid request_id are rejected at once \\
and never retried, so executions of {job} stop hanging until their task timeout.\"\"\"

# The 24 hours before the deployment: the "before" column of the report.
[baseline]
start = {baseline_start}
end = {start}

# -- the seven success criteria ---------------------------------------------------

[[criteria]]
name = "no execution timeouts"
measure = "executions.timed_out"
max = 0
critical = true          # one timeout ends the watch early: FAILED

[[criteria]]
name = "every execution completes in under 10 minutes"
measure = "executions.duration_s.max"
max = 600

[[criteria]]
name = "invalid requests rejected immediately"
measure = "messages.rejection_latency_ms.p99"
max = 1000
no_data = "pass"         # a worker that logs no latency, or no poison traffic at all

[[criteria]]
name = "no retry loops for rejected messages"
measure = "messages.rejected.redelivered"
max = 0
critical = true

[[criteria]]
name = "valid requests processed successfully"
measure = "executions.succeeded"
min = 1

[[criteria]]
name = "startup under 2 minutes"
measure = "executions.startup_s.max"
max = 120

[[criteria]]
name = "no repeated failures of the same request"
measure = "requests.failed_in_multiple_executions"
max = 0

# -- the four risks (never change the verdict; shown in every report) ----------------

[[risks]]
name = "DLQ filling up"
probability = "low"
impact = "medium"
mitigation = "look at the dead-letter subscription; fix the producer, then replay"
measure = "messages.rejected"
max = 50

[[risks]]
name = "a valid request is rejected by the stricter validation"
probability = "low"
impact = "high"
mitigation = "check rejections by reason; roll back if a valid shape is refused"
measure = "messages.rejected.schema_invalid"
max = 0

[[risks]]
name = "new error patterns after the deployment"
probability = "medium"
impact = "medium"
mitigation = "read the new templates in the report; roll back if they are the fix's"
measure = "errors.new_patterns"
max = 0

[[risks]]
name = "messages pile up in the subscription"
probability = "low"
impact = "high"
mitigation = "scale the job's parallelism, or run an execution by hand"
measure = "queue.oldest_unacked_age_s"
max = 900

[alerts]
# notify_command = ["notify-send", "steadyq watch"]   # JSON on stdin, STEADYQ_ALERT_* env
# webhook = "https://hooks.example.com/steadyq"
timeout_s = "10s"
"""


def plan_for(
    source: str, subscription: str | None, *, start: float, timeout_s: float = 1800.0
) -> str:
    """The plan's TOML for a job (``cloudrun://PROJECT/REGION/JOB``).

    Raises:
        ConfigError: a URL is malformed.
    """
    project, region, job = parse_source_url(source)
    if subscription is not None:
        parse_subscription_url(subscription)
    start = float(int(start) // 60 * 60)  # to the minute: a plan is read by people
    slug = re.sub(r"[^a-z0-9]+", "-", job.lower()).strip("-") or "job"
    return _TEMPLATE.format(
        job=job.replace('"', "'"),
        project=project,
        region=region,
        slug=slug,
        source=source,
        subscription_arg="" if subscription is None else f" --subscription {subscription}",
        start=rfc3339(start).replace(".000000", ""),
        baseline_start=rfc3339(start - 86400).replace(".000000", ""),
        timeout=format_duration(timeout_s).replace(" ", ""),
    )
