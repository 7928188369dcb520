"""The identity service. Tenants and their API keys, the authenticator every server is given.

Its `ApiKeyService` is served by the jobs process (the jobs port, the gateway's route to jobs), so
clients reach it where they always have; `cohort.services.suite` adds it to that server.
"""
