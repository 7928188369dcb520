"""The job manager: the job lifecycle, orchestration of the other services, job status streams.

Its server also serves the identity service's `cohort.api.identity.v1.ApiKeyService` (see
`cohort.services.suite.SERVED_WITH`).
"""
