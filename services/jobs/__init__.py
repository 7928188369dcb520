"""The job manager: the job lifecycle, orchestration of the other services, job status streams.

It is also the control plane that serves `cohort.api.identity.v1.ApiKeyService`.
"""
